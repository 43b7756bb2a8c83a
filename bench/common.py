"""Shared helpers of the benchmarks: machine facts, binaries, percentiles, tables, servers."""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.capture.launcher import headless_shell
from sidecar_sandbox.demo import find_browser

ROOT = Path(__file__).resolve().parent.parent


def find_chromium() -> str | None:
    """``SIDECAR_CHROMIUM``, else a Chromium on PATH (the demo's own detection)."""
    return find_browser(None) or None


def find_headless_shell() -> str | None:
    """Chromium's old headless mode as its own binary (Debian: ``chromium-headless-shell``):
    ``SIDECAR_HEADLESS_SHELL``, else the binary the product would find (``launcher.headless_shell``:
    the real binary, not Debian's wrapper script that does not ``exec``)."""
    env = os.environ.get("SIDECAR_HEADLESS_SHELL")
    if env and os.access(env, os.X_OK):
        return env
    return headless_shell()


def find_prometheus() -> str | None:
    return os.environ.get("SIDECAR_TEST_PROMETHEUS") or shutil.which("prometheus")


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they only compare within one run)."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            mem_kb = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), 0)
    except OSError:
        pass
    chromium = find_chromium()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "load_avg": load_avg(),
        "python": platform.python_version(),
        "chromium": chromium_version(chromium) if chromium else None,
        "headless_shell": chromium_version(shell) if (shell := find_headless_shell()) else None,
    }


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def chromium_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return path
    return f"{path}: {out.strip()}" if out.strip() else path


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in [0, 1]); NaN for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float]) -> dict[str, float | int]:
    xs = list(values)
    return {
        "n": len(xs),
        "p50": round(quantile(xs, 0.5), 1),
        "p95": round(quantile(xs, 0.95), 1),
        "max": round(max(xs), 1) if xs else math.nan,
    }


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Run ``app`` on a free loopback port; the runner (to clean up) and the base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"
