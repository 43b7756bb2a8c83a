"""Command line: the one place where errors become exit codes.

Exit codes: 0 success, 1 runtime failure, 2 configuration (or usage) error.

Expected operational failures — the daemon could not start (``StartupError``: browser path,
port in use, state directory), Flashduty refused or could not be reached, a capture could not
run, a file could not be read — print one line on stderr and exit 1. Only a bug prints a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

import yaml

from sidecar.config import (
    Config,
    ConfigError,
    load_config,
    redacted_dict,
    resolve_config_path,
    secret_values,
)
from sidecar.logs import setup_logging

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("sidecar.cli")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (default: $FLASHDUTY_SIDECAR_CONFIG, then ./config.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashduty-sidecar",
        description="Evaluates alert rules, captures the Grafana panels in headless Chromium and pushes "
        "Flashduty Standard Alerts with the pictures.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    _add_config(p)

    p = sub.add_parser("check-config", help="validate a config; print every problem as path: message")
    _add_config(p)

    p = sub.add_parser("print-config", help="print the merged config as YAML, secrets redacted")
    _add_config(p)

    p = sub.add_parser("healthcheck", help="GET /healthz of a running daemon (for container probes)")
    p.add_argument("--url", default="http://127.0.0.1:9464/healthz")
    p.add_argument("--timeout", type=float, default=5.0)

    p = sub.add_parser("capture", help="capture one panel to a file (debugging)")
    _add_config(p)
    p.add_argument("--dashboard", required=True, help="dashboard uid")
    p.add_argument("--panel", help="panel id or Scenes key (panel-4); omit for the whole dashboard")
    p.add_argument("--from", dest="time_from", default="now-1h")
    p.add_argument("--to", dest="time_to", default="now")
    p.add_argument("--var", action="append", default=[], metavar="K=V", help="template variable (repeatable)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--format", choices=["png", "jpeg", "webp"])
    p.add_argument("-o", "--output", required=True, help="output file")

    p = sub.add_parser("alerts", help="list Flashduty alerts through /alert/list (needs flashduty.app_key)")
    _add_config(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--active", action="store_true", help="only active alerts")
    g.add_argument("--resolved", action="store_true", help="only resolved alerts")
    p.add_argument("--since", default="24h", help="how far back (default 24h)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("dead-letters", help="list or retry events that could not be delivered")
    _add_config(p)
    p.add_argument("action", choices=["list", "retry"])
    p.add_argument("ids", nargs="*", type=int, help="ids to retry (default: all)")

    p = sub.add_parser("demo", help="the whole pipeline against the built-in sandbox; writes a gallery")
    p.add_argument("--out", default="demo-out", help="directory for the gallery (default ./demo-out)")
    p.add_argument("--duration", default="60s", help="stop after this long (default 60s)")
    p.add_argument("--browser-path", default=None, help="Chromium to use (default: auto-detect)")

    p = sub.add_parser("sandbox", help="run the local Flashduty, Grafana and Prometheus emulators")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--flashduty-port", type=int, default=18080)
    p.add_argument("--grafana-port", type=int, default=13000)
    p.add_argument("--prometheus-port", type=int, default=19090)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _COMMANDS.get(args.command) or _tools()[args.command]
    try:
        return handler(args)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) in the configuration", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAIL
    except ModuleNotFoundError as e:
        # an installation without its dependencies: say which, not a chained traceback
        print(
            f"flashduty-sidecar {args.command}: missing Python package {e.name!r}: "
            "install flashduty-sidecar with its dependencies",
            file=sys.stderr,
        )
        return EXIT_FAIL
    except Exception as e:
        if isinstance(e, _operational()):
            print(f"flashduty-sidecar {args.command}: {_one_line(e)}", file=sys.stderr)
            return EXIT_FAIL
        logging.getLogger("sidecar").error("fatal: %s", e, exc_info=True)
        return EXIT_FAIL


def _operational() -> tuple[type[BaseException], ...]:
    from sidecar.app import StartupError
    from sidecar.capture.errors import CaptureError
    from sidecar.flashduty.errors import FlashdutyError

    return (StartupError, CaptureError, FlashdutyError, OSError, sqlite3.Error)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 500 else text[:499] + "…"


def load_args(args: argparse.Namespace) -> tuple[Config, str]:
    path = resolve_config_path(args.config)
    return load_config(path), path


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, path = load_args(args)
    print(f"{path}: ok ({len(cfg.rules)} rules, {len(cfg.datasources)} datasources)")
    return EXIT_OK


def cmd_print_config(args: argparse.Namespace) -> int:
    cfg, _ = load_args(args)
    print(yaml.safe_dump(redacted_dict(cfg), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def cmd_healthcheck(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
            print(body)
            return EXIT_OK if resp.status == 200 else EXIT_FAIL
    except urllib.error.HTTPError as e:
        print(e.read().decode("utf-8", "replace") or f"HTTP {e.code}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as e:
        print(f"healthcheck failed: {getattr(e, 'reason', e)}", file=sys.stderr)
    return EXIT_FAIL


def cmd_run(args: argparse.Namespace) -> int:
    from sidecar.daemon import Daemon

    cfg, path = load_args(args)
    setup_logging(level=cfg.log.level, fmt=cfg.log.format, secrets=secret_values(cfg))
    return asyncio.run(Daemon(cfg, config_path=path).run())


def _tools() -> dict[str, Callable[[argparse.Namespace], int]]:
    from sidecar import cli_tools

    return {
        "capture": cli_tools.cmd_capture,
        "alerts": cli_tools.cmd_alerts,
        "dead-letters": cli_tools.cmd_dead_letters,
        "demo": cli_tools.cmd_demo,
        "sandbox": cli_tools.cmd_sandbox,
    }


_COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "print-config": cmd_print_config,
    "healthcheck": cmd_healthcheck,
}
