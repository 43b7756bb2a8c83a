"""Capture what the real Alertmanager and Prometheus POST, into tests/data/ (run by hand, from the repo root).

    PYTHONPATH=. python tests/data/capture_payloads.py

Starts Debian's ``prometheus-alertmanager`` with a webhook receiver and Debian's ``prometheus``
with an ``alerting.alertmanagers`` entry, both pointed at a recording server on loopback, makes
each send one firing and one resolved notification, and writes the bodies as received
(re-indented JSON; times are those of the run). See tests/data/README.md.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.procs import PROMETHEUS, alertmanager, free_port, process

OUT = Path(__file__).parent
ALERT = {"alertname": "CheckoutErrors", "service": "checkout", "severity": "critical"}
RULES = """groups:
  - name: checkout
    rules:
      - alert: CheckoutErrors
        expr: {expr}
        labels: {{severity: critical, service: checkout}}
        annotations:
          summary: Checkout errors above 1/s
          grafana_dashboard_uid: sandbox
          grafana_panel_id: "6"
"""


async def main() -> int:
    seen: dict[str, list[Any]] = {"webhook": [], "alerts": []}

    async def record(request: web.Request) -> web.Response:
        kind = "webhook" if request.path == "/webhook" else "alerts"
        seen[kind].append((datetime.now(UTC), json.loads(await request.read())))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhook", record)
    app.router.add_post("/api/v2/alerts", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await _alertmanager(Path(tmp), port, seen)
            await _prometheus(Path(tmp), port, seen)
        finally:
            await runner.cleanup()
    return 0


async def _until(pred: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout * 10)):
        if pred():
            return
        await asyncio.sleep(0.1)
    raise SystemExit("timed out")


async def _alertmanager(tmp: Path, port: int, seen: dict[str, list[Any]]) -> None:
    config = (
        "route: {receiver: r, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}\n"
        f"receivers: [{{name: r, webhook_configs: [{{url: 'http://127.0.0.1:{port}/webhook', send_resolved: true}}]}}]\n"
    )
    now = datetime.now(UTC)
    alert = {
        "labels": ALERT,
        "annotations": {"summary": "Checkout errors above 1/s", "grafana_dashboard_uid": "sandbox"},
        "startsAt": (now - timedelta(seconds=5)).isoformat(),
        "generatorURL": "http://prometheus.example:9090/graph",
    }
    external = ("--web.external-url=http://alertmanager.example:9093",)
    async with (
        alertmanager(tmp / "am", config_yaml=config, extra_args=external) as url,
        aiohttp.ClientSession() as http,
    ):
        await http.post(url + "/api/v2/alerts", json=[alert])
        await _until(lambda: seen["webhook"])
        ended = {**alert, "endsAt": datetime.now(UTC).isoformat()}
        await http.post(url + "/api/v2/alerts", json=[ended])
        await _until(lambda: any(b["status"] == "resolved" for _, b in seen["webhook"]))
    _write("alertmanager/webhook_v4_firing.json", seen["webhook"][0][1])
    resolved = next(b for _, b in seen["webhook"] if b["status"] == "resolved")
    _write("alertmanager/webhook_v4_resolved.json", resolved)


async def _prometheus(tmp: Path, port: int, seen: dict[str, list[Any]]) -> None:
    d = tmp / "prom"
    d.mkdir(parents=True, exist_ok=True)
    (d / "rules.yml").write_text(RULES.format(expr="vector(1)"))
    (d / "prometheus.yml").write_text(
        "global: {evaluation_interval: 1s}\nrule_files: [rules.yml]\n"
        f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]}}\n"
    )
    prom_port = free_port()
    args = [
        PROMETHEUS,
        f"--config.file={d / 'prometheus.yml'}",
        f"--storage.tsdb.path={d / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--web.enable-lifecycle",
        "--web.external-url=http://prometheus.example:9090",
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{prom_port}"
    async with process(args, ready_url=url + "/-/ready", log_path=d / "prometheus.log"):
        await _until(lambda: seen["alerts"])
        (d / "rules.yml").write_text(RULES.format(expr="vector(1) > 2"))
        async with aiohttp.ClientSession() as http:
            await http.post(url + "/-/reload")

        def resolved() -> list[Any]:  # an endsAt already past when it was received
            return [b for at, b in seen["alerts"] if b and datetime.fromisoformat(b[0]["endsAt"]) <= at]

        await _until(resolved)
    _write("prometheus/notifier_firing.json", seen["alerts"][0][1])
    _write("prometheus/notifier_resolved.json", resolved()[0])


def _write(name: str, doc: Any) -> None:
    (OUT / name).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", OUT / name)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
