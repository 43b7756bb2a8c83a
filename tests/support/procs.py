"""Start real Prometheus and Alertmanager processes for integration tests.

Each runs on a free loopback port with its own temporary data directory, logs to a file (shown
when it fails to start), and is stopped (SIGTERM, then SIGKILL) when the context exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

PROMETHEUS = os.environ.get("SIDECAR_TEST_PROMETHEUS", "/usr/bin/prometheus")
ALERTMANAGER = os.environ.get("SIDECAR_TEST_ALERTMANAGER", "/usr/bin/prometheus-alertmanager")


def have(binary: str) -> bool:
    return (Path(binary).is_file() and os.access(binary, os.X_OK)) or shutil.which(binary) is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def process(args: list[str], *, ready_url: str, log_path: Path, timeout: float = 15.0) -> AsyncIterator[None]:
    """Run ``args`` until the context exits; wait until ``ready_url`` answers 200."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        await _wait_ready(proc, ready_url, log_path, timeout)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_ready(proc: asyncio.subprocess.Process, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{url}: process exited ({proc.returncode}):\n{_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@asynccontextmanager
async def prometheus(
    tmp: Path,
    *,
    targets: list[str],
    scrape_interval: str = "1s",
    extra_config: str = "",
    extra_args: tuple[str, ...] = (),
) -> AsyncIterator[str]:
    """A Prometheus scraping ``targets`` (host:port); yields its base URL. ``extra_config``: more
    top-level sections of prometheus.yml (``rule_files``, ``alerting``); ``extra_args``: flags."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
        f"scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [{quoted}]\n" + extra_config
    )
    url = f"http://127.0.0.1:{port}"
    args = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        *extra_args,
    ]
    async with process(args, ready_url=url + "/-/ready", log_path=tmp / "prometheus.log"):
        yield url


@asynccontextmanager
async def alertmanager(tmp: Path, *, config_yaml: str, extra_args: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """An Alertmanager without clustering; yields its base URL."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "alertmanager.yml"
    config.write_text(config_yaml)
    url = f"http://127.0.0.1:{port}"
    args = [
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
        *extra_args,
    ]
    async with process(args, ready_url=url + "/-/ready", log_path=tmp / "alertmanager.log"):
        yield url
