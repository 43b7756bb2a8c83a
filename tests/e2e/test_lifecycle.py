"""The health model and start-up, with the real browser and real processes.

* readiness never depends on the browser: every Chromium process killed, ``/readyz`` stays 200
  and the next alert still gets its picture (the browser is relaunched);
* a browser that can never start fails ``/healthz`` after ``capture.liveness_grace``, while
  ``/readyz`` stays 200 and alerts still go out (without pictures);
* a start-up failure (browser path, port in use, unwritable ``state_dir``) exits 1 with one line
  and leaves no task, session, Chromium process or temp directory behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.app import StartupError
from sidecar.capture.proc import chromium_processes
from sidecar.config import load_config
from sidecar.daemon import Daemon
from sidecar_sandbox.runner import CONFIG_HEAD, Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install chromium or set SIDECAR_CHROMIUM"),
]

CONFIG = (
    CONFIG_HEAD
    + """\
capture:
  browser_path: ${CHROMIUM}
  timeout: 10s
  image_budget: 8s
  liveness_grace: 1s
server:
  listen: ${LISTEN}
state_dir: ${STATE_DIR}
"""
)

ALERT = {
    "version": "4",
    "groupKey": "{}:{}",
    "status": "firing",
    "receiver": "flashduty",
    "groupLabels": {},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [],
}


def webhook_body(n: int) -> dict[str, object]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "instance": f"db-{n}", "severity": "critical"},
        "annotations": {"summary": f"Disk full on db-{n}", "grafana_dashboard_uid": "sandbox", "grafana_panel_id": "1"},
        "startsAt": "2026-11-23T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{n:016x}",
    }
    return {**ALERT, "alerts": [alert]}


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.1)
    try:
        yield b
    finally:
        await b.close()


def env_for(tmp_path: Path, boxes: Sandboxes | None, **extra: str) -> dict[str, str]:
    base = boxes.env() if boxes is not None else {
        "SANDBOX_FLASHDUTY_URL": "http://127.0.0.1:9",
        "SANDBOX_GRAFANA_URL": "http://127.0.0.1:9",
        "FLASHDUTY_INTEGRATION_KEY": "lifecycle-key",
        "GRAFANA_TOKEN": "lifecycle-token",
    }  # fmt: skip
    return {**base, "CHROMIUM": CHROMIUM or "", "STATE_DIR": str(tmp_path / "state"), "LISTEN": "127.0.0.1:0", **extra}


def write(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def alerts_with_pictures(boxes: Sandboxes, instance: str) -> list[dict[str, object]]:
    return [
        a
        for a in boxes.flashduty.state()["alerts"]
        if a["labels"].get("instance") == instance and a["images"]  # type: ignore[attr-defined]
    ]


async def test_killing_every_chromium_keeps_readiness_and_the_next_alert_gets_its_picture(
    tmp_path: Path, boxes: Sandboxes
) -> None:
    daemon = Daemon(load_config(write(tmp_path), env=env_for(tmp_path, boxes)))
    await daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/webhook/alertmanager", json=webhook_body(1)) as r:
                assert r.status == 200, await r.text()
            await eventually(lambda: alerts_with_pictures(boxes, "db-1"), "the first alert's picture", 30)

            victims = chromium_processes(daemon.capture.browser.markers)
            assert victims, "no Chromium process found for the running browser"
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            await eventually(lambda: not daemon.capture.browser_connected, "the browser to be seen gone", 10)
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()  # never the browser: Grafana's pod stays Ready

            async with http.post(f"{base}/webhook/alertmanager", json=webhook_body(2)) as r:
                assert r.status == 200, await r.text()
            await eventually(lambda: alerts_with_pictures(boxes, "db-2"), "the next alert's picture", 30)
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200, await r.text()
    finally:
        await daemon.stop()


async def test_a_browser_that_never_starts_fails_liveness_not_readiness(tmp_path: Path, boxes: Sandboxes) -> None:
    broken = tmp_path / "broken-chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    broken.chmod(0o755)
    daemon = Daemon(load_config(write(tmp_path), env=env_for(tmp_path, boxes, CHROMIUM=str(broken))))
    await daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()

            async def live() -> int:
                async with http.get(f"{base}/healthz") as r:
                    return r.status

            statuses: list[int] = []

            async def unhealthy() -> bool:
                statuses.append(await live())
                return statuses[-1] == 503

            deadline = asyncio.get_running_loop().time() + 15
            while not await unhealthy():
                assert asyncio.get_running_loop().time() < deadline, f"/healthz never failed: {statuses}"
                await asyncio.sleep(0.2)
            async with http.get(f"{base}/healthz") as r:
                body = await r.json()
            assert body["checks"]["browser"].startswith("the browser could not be launched for")
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()

            # the alert is more important than the picture: it still goes out, saying why
            async with http.post(f"{base}/webhook/alertmanager", json=webhook_body(3)) as r:
                assert r.status == 200
            await eventually(
                lambda: [a for a in boxes.flashduty.state()["alerts"] if a["labels"].get("instance") == "db-3"],
                "the alert without its picture",
                30,
            )
    finally:
        await daemon.stop()


@pytest.mark.parametrize("case", ["browser_path", "port", "state_dir"])
async def test_a_failed_start_unwinds_everything(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    private_tmp = tmp_path / "tmp"  # the browser's work directories go here, and must be gone after
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    env = env_for(tmp_path, None)
    holder = None
    if case == "browser_path":
        env["CHROMIUM"] = "/nonexistent/chromium"
        want = "capture.browser_path: /nonexistent/chromium is not an executable file"
    elif case == "port":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        env["LISTEN"] = f"127.0.0.1:{holder.getsockname()[1]}"
        want = "server.listen 127.0.0.1:"
    else:
        (tmp_path / "file").write_text("not a directory")
        env["STATE_DIR"] = str(tmp_path / "file" / "state")
        want = f"state_dir {tmp_path / 'file' / 'state'} is not writable"
    tasks_before = asyncio.all_tasks()
    daemon = Daemon(load_config(write(tmp_path), env=env))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StartupError) as err:
            await daemon.start()
        await asyncio.sleep(0.1)
        gc.collect()
    if holder is not None:
        holder.close()
    assert want in str(err.value)
    assert "\n" not in str(err.value)
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    assert not leftover, f"tasks left running: {leftover}"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert not list(private_tmp.iterdir()), "a temp dir was left behind"


def run_cli(config: Path, env: dict[str, str], *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHDUTY_", "GRAFANA_"))}
    full.update(env)
    cmd = [sys.executable, "-m", "sidecar", "run", "-c", str(config)]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=60, check=False)


@pytest.mark.parametrize("case", ["browser_path", "port", "state_dir"])
def test_run_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="sidecar-lifecycle-"))  # world-readable: may run as nobody
    tmp_path.chmod(0o755)
    env = env_for(tmp_path, None)
    user = None
    holder = None
    if case == "browser_path":
        env["CHROMIUM"] = "/nonexistent/chromium"
    elif case == "port":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        env["LISTEN"] = f"127.0.0.1:{holder.getsockname()[1]}"
    else:
        state = tmp_path / "readonly"
        state.mkdir()
        state.chmod(0o555)
        env["STATE_DIR"] = str(state)
        if os.geteuid() == 0:  # root writes anywhere: run as nobody, who can read the project
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot make a directory unwritable")
            user = "65534"
    config = write(tmp_path)
    config.chmod(0o644)
    try:
        res = run_cli(config, env, user=user)
    finally:
        if holder is not None:
            holder.close()
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("flashduty-sidecar run: "), lines
    assert "Traceback" not in res.stderr
