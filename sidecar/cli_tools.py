"""The debugging and operator subcommands: ``capture``, ``alerts``, ``dead-letters``, and the
``demo`` / ``sandbox`` of the emulators (installed from source only, imported lazily).

Each returns an exit code; errors they raise become exit codes in ``cli.main``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from typing import Any

from sidecar.cli import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, load_args
from sidecar.config import ConfigError, parse_duration, secret_values
from sidecar.logs import setup_logging

__all__ = ["cmd_alerts", "cmd_capture", "cmd_dead_letters", "cmd_demo", "cmd_sandbox"]


def cmd_capture(args: argparse.Namespace) -> int:
    from sidecar.capture.oneshot import capture_once
    from sidecar.model import PanelCapture

    cfg, _ = load_args(args)
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

    cfg, _ = load_args(args)
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
    if cfg.ha.mode == "kubernetes":  # who sends, beside what Flashduty has (stderr: the JSON stays clean)
        from sidecar.ha.lease import who_leads

        print(asyncio.run(who_leads(cfg.ha)), file=sys.stderr if args.json else sys.stdout)
    print(format_alerts(items, as_json=args.json))
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:

    from sidecar.delivery.outbox import Outbox

    cfg, _ = load_args(args)
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
