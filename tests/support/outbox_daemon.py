"""Subject of ``tests/integration/test_kill9.py``: a minimal daemon around the real outbox and
pipeline. Run from the repository root (it imports ``tests.support.delivery``):

    python -m tests.support.outbox_daemon STATE_DIR SANDBOX_URL N [--enqueue]

With ``--enqueue`` it first puts N events (rule ``Kill9``, one picture each) in the outbox on
STATE_DIR, like the engine would. Then, enqueuing or not, it reports how many claims the
previous run left (``leases K``), starts the pipeline against the Flashduty sandbox at
SANDBOX_URL (client at time_scale=10, like the sandbox the test runs), waits until the outbox
is drained, stops cleanly and prints ``drained``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from sidecar.delivery.outbox import Outbox
from sidecar.delivery.pipeline import DeliveryPipeline
from sidecar.delivery.push_slots import PipelineSettings
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.uploader import ImageUploader
from sidecar.metrics import Metrics
from tests.support.delivery import FakeCapture, event, make_config

TIME_SCALE = 10
RULE = "Kill9"


async def run(state_dir: Path, url: str, n: int, enqueue: bool) -> None:
    config = make_config(url, state_dir, budget=1.0)
    metrics = Metrics()
    client = FlashdutyClient(config.flashduty, metrics=metrics, time_scale=TIME_SCALE)
    uploader = ImageUploader(client, db_path=str(state_dir / "images.sqlite3"), ttl=3600, metrics=metrics)
    outbox = Outbox.in_dir(state_dir, rng=lambda: 0.05)
    pipeline = DeliveryPipeline(
        outbox=outbox,
        capture=FakeCapture(delay=0.05),
        uploader=uploader,
        client=client,
        settings=PipelineSettings.from_config(config),
        metrics=metrics,
    )
    if enqueue:
        for i in range(n):
            outbox.put(event(i, rule=RULE))
        print(f"enqueued {n}", flush=True)
    print(f"leases {outbox.in_flight_count()}", flush=True)
    await pipeline.start()
    while outbox.pending_count() or not pipeline.idle:
        await asyncio.sleep(0.05)
    await pipeline.stop(grace=1.0)
    await uploader.close()
    await client.close()
    outbox.close()
    print("drained", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("state_dir", type=Path)
    p.add_argument("url")
    p.add_argument("n", type=int)
    p.add_argument("--enqueue", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args.state_dir, args.url, args.n, args.enqueue))


if __name__ == "__main__":
    main()
