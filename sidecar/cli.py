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
import importlib
import json
import logging
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import yaml

from sidecar.config import (
    Config,
    ConfigError,
    load_config,
    parse_duration,
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
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) in the configuration", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
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


def _load(args: argparse.Namespace) -> tuple[Config, str]:
    path = resolve_config_path(args.config)
    return load_config(path), path


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, path = _load(args)
    print(f"{path}: ok ({len(cfg.rules)} rules, {len(cfg.datasources)} datasources)")
    return EXIT_OK


def cmd_print_config(args: argparse.Namespace) -> int:
    cfg, _ = _load(args)
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

    cfg, path = _load(args)
    setup_logging(level=cfg.log.level, fmt=cfg.log.format, secrets=secret_values(cfg))
    return asyncio.run(Daemon(cfg, config_path=path).run())


def cmd_capture(args: argparse.Namespace) -> int:
    from sidecar.capture.oneshot import capture_once
    from sidecar.model import PanelCapture

    cfg, _ = _load(args)
    setup_logging(level="warning", fmt="text", secrets=secret_values(cfg), stream=sys.stderr)
    vars_: list[tuple[str, str]] = []
    for item in args.var:
        k, sep, v = item.partition("=")
        if not sep or not k:
            print(f"--var {item!r}: expected K=V", file=sys.stderr)
            return EXIT_CONFIG
        vars_.append((k, v))
    req = PanelCapture(
        dashboard=args.dashboard,
        panel=args.panel,
        time_from=args.time_from,
        time_to=args.time_to,
        vars=tuple(vars_),
        width=args.width or cfg.capture.width,
        height=args.height or cfg.capture.height,
        scale=cfg.capture.scale,
        theme=cfg.grafana.theme,
        timezone=cfg.grafana.timezone,
        format=args.format or cfg.capture.format,
    )
    result = asyncio.run(capture_once(cfg, req, args.output))
    steps = "  ".join(f"{k}={v * 1000:.0f}ms" for k, v in result.steps.items())
    print(f"class: {result.cls}")
    print(f"steps: {steps}")
    print(f"url: {result.url}")
    if result.detail:
        print(f"detail: {result.detail}")
    if result.image is not None:
        print(f"wrote {args.output} ({len(result.image)} bytes, {result.content_type})")
    return EXIT_OK if result.cls == "ok" else EXIT_FAIL


def cmd_alerts(args: argparse.Namespace) -> int:
    from sidecar.delivery.alerts_table import format_alerts
    from sidecar.flashduty.client import FlashdutyClient
    from sidecar.metrics import Metrics

    cfg, _ = _load(args)
    setup_logging(level="warning", fmt="text", secrets=secret_values(cfg), stream=sys.stderr)
    if cfg.flashduty.app_key is None:
        raise ConfigError(["flashduty.app_key: required for `alerts` (set FLASHDUTY_APP_KEY)"])
    try:
        since = parse_duration(args.since)
    except ValueError as e:
        print(f"--since: {e}", file=sys.stderr)
        return EXIT_CONFIG
    is_active = True if args.active else False if args.resolved else None

    async def fetch() -> list[dict[str, Any]]:
        client = FlashdutyClient(cfg.flashduty, metrics=Metrics())
        try:
            now = time.time()
            return await client.list_alerts(start=now - since, end=now, is_active=is_active)
        finally:
            await client.close()

    items = asyncio.run(fetch())
    print(format_alerts(items, as_json=args.json))
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:

    from sidecar.delivery.outbox import Outbox

    cfg, _ = _load(args)
    outbox = Outbox.in_dir(cfg.state_dir)
    try:
        if args.action == "list":
            rows = outbox.dead_letters.entries()
            if not rows:
                print("no dead letters")
            for row in rows:
                print(json.dumps(row, default=str, ensure_ascii=False))
            return EXIT_OK
        if args.ids:
            n = sum(outbox.dead_letters.retry(i) for i in args.ids)
        else:
            n = outbox.dead_letters.retry(None)
        print(f"requeued {n} event(s); a running daemon delivers them on its next pass")
        return EXIT_OK
    finally:
        outbox.close()


# The emulators and the demo live in sidecar_sandbox, a package of the source tree that the
# container image does not carry: these two subcommands import it lazily, and nothing else in
# sidecar imports it at all (tests/unit/test_deploy.py checks both).
NO_SANDBOX = (
    "{command} needs the sidecar_sandbox package: it is installed with the project from source "
    "(pip install -e .), not in the container image"
)


def _have_sandbox(command: str) -> bool:
    """False, after printing the one line, when sidecar_sandbox itself is not installed; an
    import error inside an installed sidecar_sandbox propagates (a bug, not a missing package)."""
    try:
        importlib.import_module("sidecar_sandbox")
    except ModuleNotFoundError as e:
        if e.name != "sidecar_sandbox":
            raise
        print(NO_SANDBOX.format(command=command), file=sys.stderr)
        return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    if not _have_sandbox("demo"):
        return EXIT_CONFIG
    from sidecar_sandbox.demo import run_demo

    try:
        duration = parse_duration(args.duration)
    except ValueError as e:
        print(f"--duration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(run_demo(out_dir=args.out, duration=duration, browser_path=args.browser_path))


def cmd_sandbox(args: argparse.Namespace) -> int:
    if not _have_sandbox("sandbox"):
        return EXIT_CONFIG
    from sidecar_sandbox.runner import serve_forever

    setup_logging(level="info", fmt="text")
    return asyncio.run(
        serve_forever(
            host=args.host,
            flashduty_port=args.flashduty_port,
            grafana_port=args.grafana_port,
            prometheus_port=args.prometheus_port,
        )
    )


_COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "print-config": cmd_print_config,
    "healthcheck": cmd_healthcheck,
    "capture": cmd_capture,
    "alerts": cmd_alerts,
    "dead-letters": cmd_dead_letters,
    "demo": cmd_demo,
    "sandbox": cmd_sandbox,
}
