"""The operator tools as real processes against the sandboxes: `capture`, `alerts`, `dead-letters`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from sidecar.delivery.outbox import Outbox
from sidecar.model import AlertEvent, alert_key
from sidecar_sandbox.runner import Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium

CONFIG = """
flashduty:
  api_host: {fd}
  integration_key: ${{FLASHDUTY_INTEGRATION_KEY}}
  app_key: ${{FLASHDUTY_APP_KEY:-}}
grafana:
  url: {gf}
  token: ${{GRAFANA_TOKEN}}
capture:
  browser_path: ${{SIDECAR_CHROMIUM:-}}
  timeout: 15s
state_dir: {state}
"""


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.2)
    try:
        yield b
    finally:
        await b.close()


def config(tmp_path: Path, boxes: Sandboxes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(fd=boxes.flashduty_url, gf=boxes.grafana_url, state=tmp_path / "state"))
    return path


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHDUTY_", "GRAFANA_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.chromium
async def test_capture_command_on_a_panel_whose_data_arrives_after_3s(tmp_path: Path, boxes: Sandboxes) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: install chromium or set SIDECAR_CHROMIUM")
    env = {**boxes.env(), "SIDECAR_CHROMIUM": chromium}
    path = config(tmp_path, boxes)
    out_file = tmp_path / "panel.png"
    rc, out, err = await run(
        "capture",
        "-c",
        str(path),
        "--dashboard",
        "sandbox",
        "--panel",
        "2",
        "--from",
        "now-1h",
        "--var",
        "service=checkout",
        "-o",
        str(out_file),
        env=env,
    )
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "class: ok"
    steps = dict(part.split("=") for part in lines[1].removeprefix("steps: ").split())
    assert {"navigate", "wait_ready", "screenshot", "encode"} <= set(steps)
    assert int(steps["wait_ready"].removesuffix("ms")) >= 2500  # it really waited for the 3 s query
    with Image.open(out_file) as img:
        assert img.size == (1000, 500)
    assert "sandbox-grafana-token" not in out + err

    # a wrong token: the login page is recognised, not saved as a picture
    rc, out, _ = await run(
        "capture",
        "-c",
        str(path),
        "--dashboard",
        "sandbox",
        "--panel",
        "1",
        "-o",
        str(tmp_path / "login.png"),
        env={**env, "GRAFANA_TOKEN": "wrong-token"},
    )
    assert rc == 1
    assert out.splitlines()[0] == "class: login"


async def test_alerts_command_lists_flashduty_alerts(tmp_path: Path, boxes: Sandboxes) -> None:
    for n, status in ((1, "Critical"), (2, "Warning")):
        boxes.flashduty.push_event(
            {
                "title_rule": f"Disk full on db-{n}",
                "event_status": status,
                "alert_key": f"k{n}",
                "labels": {"sidecar_rule": "DiskFull", "instance": f"db-{n}"},
            }
        )
    boxes.flashduty.push_event({"title_rule": "Disk full on db-2", "event_status": "Ok", "alert_key": "k2"})
    path = config(tmp_path, boxes)
    env = boxes.env()
    rc, out, err = await run("alerts", "-c", str(path), "--active", env=env)
    assert rc == 0, err
    assert "Disk full on db-1" in out and "Disk full on db-2" not in out
    rc, out, _ = await run("alerts", "-c", str(path), "--since", "1h", "--json", env=env)
    assert rc == 0
    titles = sorted(item["title"] for item in json.loads(out))
    assert titles == ["Disk full on db-1", "Disk full on db-2"]
    # without an app key: a config error naming the key, exit 2
    rc, _, err = await run("alerts", "-c", str(path), env={k: v for k, v in env.items() if k != "FLASHDUTY_APP_KEY"})
    assert rc == 2
    assert "flashduty.app_key" in err


async def test_dead_letters_list_and_retry(tmp_path: Path, boxes: Sandboxes) -> None:
    path = config(tmp_path, boxes)
    state = tmp_path / "state"
    state.mkdir()
    outbox = Outbox(str(state / "outbox.sqlite3"), max_attempts=1)
    key = alert_key("R", {"a": "b"})
    outbox.put(AlertEvent(alert_key=key, rule="R", status="Warning", title="t", labels={"a": "b"}))
    item = outbox.claim()
    assert item is not None
    outbox.fail(item.id, "400 InvalidParameter (request_id r1)", retryable=False, request_id="r1")
    outbox.close()
    env = boxes.env()
    rc, out, err = await run("dead-letters", "-c", str(path), "list", env=env)
    assert rc == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["alert_key"] == key and "InvalidParameter" in row["last_error"]
    rc, out, _ = await run("dead-letters", "-c", str(path), "retry", env=env)
    assert rc == 0 and "requeued 1 event(s)" in out
    outbox = Outbox(str(state / "outbox.sqlite3"))
    try:
        assert outbox.pending_count() == 1 and outbox.dead_letters.entries() == []
    finally:
        outbox.close()
