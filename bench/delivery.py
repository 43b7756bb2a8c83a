"""Delivery benchmark: how close a burst of alerts gets to Flashduty's upload limits.

A burst of ``n`` alerts, each with its own picture, goes through the real ``Outbox``,
``DeliveryPipeline``, ``ImageUploader`` and ``FlashdutyClient`` to the sandbox Flashduty on a
loopback port. Only the capture service is replaced, by ``InstantCapture``: it returns each
alert's (distinct, pre-made) PNG at once, so the pictures are limited by the upload quota alone.

Time scaling: the sandbox and the client both run with ``time_scale`` (10 in the full run):
every rate-limit window is ``time_scale`` times shorter and every count unchanged, i.e. uploads
"5 per 0.1 s AND 50 per 6 s" instead of "5/s AND 50/min". The image budget is scaled the same
way (15 s / 10), so alerts wait for their pictures in the same proportion as in real time
(alerts whose picture is later are pushed without it, then updated by a follow-up).

Theoretical minimum. Upload k (k = 0, 1, …, in the order the server accepts them) must be at
least one minute window after upload k − 50 and one second window after upload k − 5 (the
sandbox, like Flashduty, refuses a request when the last window already holds the limit).
Hence, with windows W_min = 60 s / scale and W_sec = 1 s / scale,

    t_k ≥ floor(k / 50) · W_min + floor((k mod 50) / 5) · W_sec

and sending 5 per W_sec until 50 are in, then waiting for the minute window, reaches that bound.
The last of u uploads is accepted at T_min(u) = t_(u−1) at the earliest: for u = 200 and scale
10, 3 · 6 s + 9 · 0.1 s = 18.9 s. Makespan = first put → the moment the last alert's picture is
referenced at the sandbox (``received_at`` of the first event of that alert carrying an image);
the score is makespan / T_min (the request latencies are all above the bound).

Dedup: the same burst where half the alerts (every odd one) carry one shared picture; the
uploader's content hash sends it once, so 200 alerts need 101 uploads (99 saved), counted at
the sandbox.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from sidecar.capture.errors import CaptureClass
from sidecar.capture.result import CaptureResult
from sidecar.capture.urls import human_link
from sidecar.config import Config
from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.push_slots import PipelineSettings
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.metrics import Metrics
from sidecar.model import AlertEvent, PanelCapture, alert_key
from sidecar.status.journal import Journal
from sidecar_sandbox.flashduty import FlashdutySandbox

KEY = "bench-integration-key"
APP_KEY = "bench-app-key"
PER_SECOND, PER_MINUTE = 5, 50  # Flashduty's documented upload limits (per account)
IMAGE_BUDGET = 15.0  # the config default, scaled with the limits

FULL = {"alerts": 200, "time_scale": 10.0}
QUICK = {"alerts": 60, "time_scale": 20.0}


def t_min(uploads: int, time_scale: float, per_second: int = PER_SECOND, per_minute: int = PER_MINUTE) -> float:
    """Earliest acceptance of the last of ``uploads`` uploads, from the first (see the docstring)."""
    if uploads <= 0:
        return 0.0
    k = uploads - 1
    return (k // per_minute) * 60.0 / time_scale + ((k % per_minute) // per_second) * 1.0 / time_scale


FORMULA = "T_min(u) = floor((u-1)/50)·60s/scale + floor(((u-1) mod 50)/5)·1s/scale"


def picture(n: int) -> bytes:
    """A panel-sized PNG (1000×500, a dark background and a line), different for every ``n``."""
    rng = random.Random(n)
    img = Image.new("RGB", (1000, 500), (24, 27, 31))
    draw = ImageDraw.Draw(img)
    y = 250.0
    points = []
    for x in range(0, 1000, 8):
        y = min(480.0, max(20.0, y + rng.uniform(-18, 18)))
        points.append((x, y))
    draw.line(points, fill=(0x73, 0xBF, 0x69), width=2)
    draw.text((10, 10), f"bench picture {n}", fill=(204, 204, 220))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class InstantCapture:
    """Stands in for ``CaptureService``: the picture of dashboard ``d<n>`` at once."""

    def __init__(self, pictures: dict[str, bytes]) -> None:
        self.pictures = pictures

    def link(self, render_url: str) -> str:
        return human_link(render_url)

    def panel_url(self, req: PanelCapture) -> str:
        return f"http://grafana.bench:3000/d-solo/{req.dashboard}?orgId=1&panelId={req.panel}&render=1"

    async def capture(self, req: PanelCapture, *, timeout: float | None = None, rank: int = 5) -> CaptureResult:
        image = self.pictures[req.dashboard]
        return CaptureResult(
            request=req,
            cls=CaptureClass.OK,
            image=image,
            content_type="image/png",
            url=self.panel_url(req),
            steps={"screenshot": 0.0},
            detail="rendered",
            title=f"Panel {req.dashboard}",
        )


def _event(n: int) -> AlertEvent:
    labels = {"alertname": "Burst", "instance": f"host-{n}"}
    return AlertEvent(
        alert_key=alert_key("Burst", labels),
        rule="Burst",
        status="Critical",
        title=f"Burst on host-{n}",
        description=f"instance {n}",
        labels=labels,
        panels=(PanelCapture(dashboard=f"d{n}", panel="1", time_from="now-1h", time_to="now", title=f"host-{n}"),),
        event_time=time.time(),
    )


def _config(url: str, state_dir: Path, time_scale: float) -> Config:
    budget_ms = round(IMAGE_BUDGET / time_scale * 1000)
    return Config.model_validate(
        {
            "flashduty": {"api_host": url, "integration_key": KEY, "app_key": APP_KEY, "timeout": "10s"},
            "grafana": {"url": "http://grafana.bench:3000"},
            "capture": {"image_budget": f"{budget_ms}ms"},
            "state_dir": str(state_dir),
        }
    )


async def scenario(n: int, time_scale: float, *, shared_every_other: bool, journal: bool = False) -> dict[str, Any]:
    """One burst of ``n`` alerts; what the sandbox saw and how long the pictures took.
    ``journal``: with the status page's journal recording every delivery and picture, as the daemon runs."""
    common = picture(10**6)
    pictures = {f"d{i}": (common if shared_every_other and i % 2 else picture(i)) for i in range(n)}
    distinct = len(set(pictures.values()))
    sandbox = FlashdutySandbox(integration_keys=(KEY,), app_keys=(APP_KEY,), time_scale=time_scale)
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-delivery-") as tmp:
        async with sandbox.serve() as url:
            cfg = _config(url, Path(tmp), time_scale)
            metrics = Metrics()
            client = FlashdutyClient(cfg.flashduty, metrics=metrics, time_scale=time_scale)
            uploader = ImageUploader(
                client, db_path=str(Path(tmp) / "images.sqlite3"), ttl=cfg.delivery.image_cache_ttl, metrics=metrics
            )
            outbox = Outbox.in_dir(tmp, max_attempts=cfg.delivery.max_attempts)
            capture = InstantCapture(pictures)
            status = Journal(tmp, limits=lambda: cfg.status) if journal else None
            pipeline = DeliveryPipeline(
                outbox=outbox,
                capture=capture,
                uploader=uploader,
                client=client,
                settings=PipelineSettings.from_config(cfg),
                metrics=metrics,
                journal=status,
            )
            await pipeline.start()
            events = [_event(i) for i in range(n)]
            try:
                first_put = time.time()
                for ev in events:  # what the rule engine does in a burst: durable put, then kick
                    outbox.put(ev)
                    pipeline.kick()
                last_put = time.time()
                deadline = time.monotonic() + 60 + 4 * t_min(distinct, time_scale)
                while sum(1 for a in sandbox.alerts if a.images) < n:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"delivery benchmark: pictures missing after {deadline:.0f}s")
                    await asyncio.sleep(0.05)
                done_at = max(
                    min(e.received_at for e in a.events if e.images) for a in sandbox.alerts if a.images
                )  # fmt: skip
            finally:
                await pipeline.stop(grace=2.0)
                if status is not None:
                    await status.close()
                await uploader.close()
                await client.close()
                outbox.close()
            state = sandbox.state()
    makespan = done_at - first_put
    pushed = sorted(a.events[0].received_at - first_put for a in sandbox.alerts)
    bound = t_min(distinct, time_scale)
    upload_scope: dict[str, Any] = next(iter(state["limits"]["upload"]["scopes"].values()), {})
    pushes = state["endpoints"]["push"]["processed"]
    return {
        "alerts": n,
        "distinct_pictures": distinct,
        "uploads_at_sandbox": state["uploads"],
        "uploads_saved": n - state["uploads"],
        "pushes": pushes,
        "followups": pushes - n,
        "http_429": state["http_429"],
        "client_rate_limited": {
            ep: metrics.registry.get_sample_value("flashduty_sidecar_rate_limited_total", {"endpoint": ep}) or 0.0
            for ep in ("upload", "push")
        },
        "upload_windows_peak": {
            "per_second_window": upload_scope.get("max_requests_in_second"),
            "per_minute_window": upload_scope.get("max_requests_in_minute"),
        },
        "puts_s": round(last_put - first_put, 3),
        "makespan_s": round(makespan, 3),
        "t_min_s": round(bound, 3),
        "makespan_over_t_min": round(makespan / bound, 3) if bound > 0 else math.nan,
        "first_push_p50_s": round(pushed[len(pushed) // 2], 3),
        "first_push_max_s": round(pushed[-1], 3),
    }


async def run(*, quick: bool, log: Any = print) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    n, scale = int(plan["alerts"]), float(plan["time_scale"])
    started = time.monotonic()
    # without and with the status page's journal, in ABBA order (quick: AB) so a busy minute hurts both alike
    order = [False, True] if quick else [False, True, True, False]
    rounds: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for with_journal in order:
        r = await scenario(n, scale, shared_every_other=False, journal=with_journal)
        rounds[with_journal].append(r)
        what = "with the status journal" if with_journal else "without the journal"
        log(f"  delivery: {n} distinct pictures in {r['makespan_s']}s (T_min {r['t_min_s']}s), {what}")
    distinct, journal = rounds[False][0], rounds[True][0]
    dedup = await scenario(n, scale, shared_every_other=True)
    log(
        f"  delivery: {n} alerts, {dedup['distinct_pictures']} distinct pictures: {dedup['uploads_at_sandbox']} uploads"
    )
    return {
        "time_scale": scale,
        "limits": f"upload {PER_SECOND} per {1 / scale:g}s and {PER_MINUTE} per {60 / scale:g}s (every limit ×{scale:g})",
        "image_budget_s": IMAGE_BUDGET / scale,
        "formula": FORMULA,
        "distinct": distinct,
        "distinct_with_status_journal": journal,
        "journal_rounds": {"without": rounds[False], "with": rounds[True]},
        "dedup": dedup,
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(quick="--quick" in sys.argv)), indent=2))
