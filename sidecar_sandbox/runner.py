"""Start the three emulators (Flashduty, Grafana, Prometheus) on loopback ports.

Used by ``demo``, by the ``sandbox`` subcommand (so users can try a config locally), by the
tests and by the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sidecar_sandbox.flashduty import FlashdutySandbox
from sidecar_sandbox.grafana import GrafanaSandbox
from sidecar_sandbox.prometheus import PrometheusSandbox

log = logging.getLogger("sidecar_sandbox")

INTEGRATION_KEY = "sandbox-integration-key"
APP_KEY = "sandbox-app-key"
GRAFANA_TOKEN = "sandbox-grafana-token"


# The first lines of a config that points at the sandboxes (with ``Sandboxes.env()``): Flashduty,
# and Grafana with its token. Tests and benchmarks append their own capture/server/rules sections.
CONFIG_HEAD = """\
flashduty:
  api_host: ${SANDBOX_FLASHDUTY_URL}
  integration_key: ${FLASHDUTY_INTEGRATION_KEY}
grafana:
  url: ${SANDBOX_GRAFANA_URL}
  token: ${GRAFANA_TOKEN}
"""


@dataclass
class Sandboxes:
    flashduty: FlashdutySandbox
    grafana: GrafanaSandbox
    prometheus: PrometheusSandbox
    flashduty_url: str = ""
    grafana_url: str = ""
    prometheus_url: str = ""
    _runners: list[web.AppRunner] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for a config that points at these sandboxes."""
        return {
            "FLASHDUTY_INTEGRATION_KEY": INTEGRATION_KEY,
            "FLASHDUTY_APP_KEY": APP_KEY,
            "GRAFANA_TOKEN": GRAFANA_TOKEN,
            "SANDBOX_FLASHDUTY_URL": self.flashduty_url,
            "SANDBOX_GRAFANA_URL": self.grafana_url,
            "SANDBOX_PROMETHEUS_URL": self.prometheus_url,
        }

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = getattr(site, "_server", None)
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port
    return runner, int(bound)


async def start_sandboxes(
    *,
    host: str = "127.0.0.1",
    flashduty_port: int = 0,
    grafana_port: int = 0,
    prometheus_port: int = 0,
    query_delay: float = 0.3,
    time_scale: float = 1.0,
    flashduty_kwargs: dict[str, Any] | None = None,
    grafana_kwargs: dict[str, Any] | None = None,
) -> Sandboxes:
    prom = PrometheusSandbox(value=0.0)
    fd = FlashdutySandbox(time_scale=time_scale, **(flashduty_kwargs or {}))
    gf = GrafanaSandbox(
        token=GRAFANA_TOKEN,
        query_delay=query_delay,
        metric_source=lambda: prom.value,
        metric_history=prom.value_at,
        **(grafana_kwargs or {}),
    )
    boxes = Sandboxes(flashduty=fd, grafana=gf, prometheus=prom)
    try:
        for name, app, port in (
            ("flashduty", fd.make_app(), flashduty_port),
            ("grafana", gf.make_app(), grafana_port),
            ("prometheus", prom.make_app(), prometheus_port),
        ):
            runner, bound = await _serve(app, host, port)
            boxes._runners.append(runner)
            setattr(boxes, f"{name}_url", f"http://{host}:{bound}")
    except BaseException:
        await boxes.close()
        raise
    return boxes


@contextlib.asynccontextmanager
async def sandboxes(**kwargs: Any) -> AsyncIterator[Sandboxes]:
    boxes = await start_sandboxes(**kwargs)
    try:
        yield boxes
    finally:
        await boxes.close()


async def serve_forever(*, host: str, flashduty_port: int, grafana_port: int, prometheus_port: int) -> int:
    """The ``sandbox`` subcommand: serve until Ctrl-C and print how to point a config at it."""
    boxes = await start_sandboxes(
        host=host, flashduty_port=flashduty_port, grafana_port=grafana_port, prometheus_port=prometheus_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"Flashduty sandbox   {boxes.flashduty_url}   (received alerts: {boxes.flashduty_url}/)\n"
        f"Grafana sandbox     {boxes.grafana_url}   (token: {GRAFANA_TOKEN}; dashboards: sandbox, sandbox-legacy)\n"
        f"Prometheus sandbox  {boxes.prometheus_url}   (metric sandbox_demo_errors; set it with\n"
        f"                    curl -XPOST {boxes.prometheus_url}/_sandbox/metric -d '{{\"value\": 12}}')\n\n"
        "Point a config at it:\n"
        f"  flashduty.api_host: {boxes.flashduty_url}\n"
        f"  flashduty.integration_key: ${{FLASHDUTY_INTEGRATION_KEY}}   # export FLASHDUTY_INTEGRATION_KEY={INTEGRATION_KEY}\n"
        f"  grafana.url: {boxes.grafana_url}\n"
        f"  grafana.token: ${{GRAFANA_TOKEN}}                           # export GRAFANA_TOKEN={GRAFANA_TOKEN}\n"
        f"  datasources: [{{name: prom, url: {boxes.prometheus_url}}}]\n\nCtrl-C stops.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await boxes.close()
    return 0
