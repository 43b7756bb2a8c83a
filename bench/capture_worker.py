"""One capture variant in its own process: ``python bench/capture_worker.py '<json spec>'``.

Runs ``count`` captures of one panel of the sandbox Grafana at ``concurrency`` and prints one
JSON object on stdout: per capture its wall-clock start/end (Unix ms), class and steps, plus the
process's own memory samples. The sandbox (in the parent process) records when each page was
ready; the parent matches the two by the ``to=`` of the URL, which is distinct per capture (the
capture cache would otherwise serve repeats).

Variants (``impl``):

* ``product``: the sidecar's ``CaptureService`` (warm browser), imported from whatever
  ``sidecar`` package is first on ``sys.path`` (the working tree, or an older revision
  extracted by ``--compare-ref``);
* ``naive``: what a first script does: launch Chromium per capture, new page, auth header on
  every request, ``goto(url, wait_until="networkidle")``, screenshot, close.

Self-contained on purpose (no ``bench`` imports): ``--compare-ref`` copies this file next to an
extracted ``sidecar`` of another revision and runs it there.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

from sidecar_sandbox.pixels import SERIES_GREEN as GREEN

NAIVE_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BLUES = ((0x6E, 0x9F, 0xFF), (0x3D, 0x71, 0xD9))  # its spinner and loading bar
HOUR_MS = 3_600_000


def _request(spec: dict[str, Any], index: int) -> Any:
    from sidecar.model import PanelCapture

    to = spec["base_to_ms"] + index
    return PanelCapture(
        dashboard=spec["dashboard"],
        panel=spec["panel"],
        time_from=str(to - HOUR_MS),
        time_to=str(to),
        width=spec["width"],
        height=spec["height"],
    )


def _uss_kb(pid: int) -> int:
    """Memory only this process uses (private pages): what its exit would free."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return total


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process and every descendant, by command (Linux only).

    Each process counts its own time plus that of its children already reaped (cutime), so
    renderers that came and went are included through the process that reaped them.
    """
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        cpu = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        procs[int(entry)] = (ppid, name, cpu)
    me = os.getpid()
    tree = {me}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    out: dict[str, float] = {}
    for pid in tree:
        _, name, cpu = procs[pid]
        group = "python" if pid == me else ("node" if "node" in name else "chromium")
        out[group] = out.get(group, 0.0) + cpu
    return out


def _looks_drawn(image: bytes | None) -> bool:
    """The series is drawn and no loading indicator shows (a spinner picture fails)."""
    if not image:
        return False
    from PIL import Image

    with Image.open(io.BytesIO(image)) as im:
        colours = cast("list[tuple[int, tuple[int, int, int]]]", im.convert("RGB").getcolors(maxcolors=1 << 24) or [])

    def near(c: tuple[int, int, int], ref: tuple[int, int, int], tol: int) -> bool:
        return all(abs(a - b) <= tol for a, b in zip(c, ref, strict=True))

    green = sum(n for n, c in colours if near(c, GREEN, 24))
    blue = sum(n for n, c in colours if any(near(c, b, 10) for b in BLUES))
    return green > 500 and blue < 20


class _Product:
    def __init__(self, spec: dict[str, Any]) -> None:
        from pydantic import SecretStr

        from sidecar.capture.service import CaptureService
        from sidecar.config import CaptureConfig, GrafanaConfig
        from sidecar.metrics import Metrics

        capture = CaptureConfig(
            browser_path=spec["chromium"],
            concurrency=spec["concurrency"],
            timeout="30s",
            recycle_after=spec.get("recycle_after", 500),
            cache_ttl=spec.get("cache_ttl", "60s"),
            **spec.get("capture", {}),
            max_browser_rss_mb=spec.get("max_browser_rss_mb", 1024),
        )
        grafana = GrafanaConfig(url=spec["grafana_url"], token=SecretStr(spec["token"]))
        self.service = CaptureService(grafana=grafana, capture=capture, metrics=Metrics())

    async def start(self) -> None:
        await self.service.start()

    async def capture(self, spec: dict[str, Any], index: int) -> tuple[str, dict[str, float], bytes | None]:
        result = await self.service.capture(_request(spec, index))
        return str(result.cls), dict(result.steps), result.image

    def chromium_memory(self) -> dict[str, int]:
        """PSS, USS and RSS in kB, summed over all the browser's processes."""
        from sidecar.capture.proc import chromium_processes, process_memory_bytes

        pids = chromium_processes(self.service.browser.markers)
        return {
            "chromium_pss_kb": process_memory_bytes(pids) // 1024,
            "chromium_uss_kb": sum(_uss_kb(p) for p in pids),
            "chromium_rss_kb": sum(_rss_kb(p) for p in pids),
            "chromium_processes": len(pids),
        }

    def launches(self) -> int:
        return int(self.service.browser.launches)

    def open_contexts(self) -> int:
        return int(getattr(self.service.browser, "open_contexts", 0))

    async def close(self) -> None:
        await self.service.close()


class _Naive:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.playwright: Any = None

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()

    async def capture(self, spec: dict[str, Any], index: int) -> tuple[str, dict[str, float], bytes | None]:
        from sidecar.capture.urls import panel_url
        from sidecar.config import GrafanaConfig

        url = panel_url(GrafanaConfig(url=spec["grafana_url"]), _request(spec, index), "sandbox-services")
        browser = await self.playwright.chromium.launch(
            executable_path=spec["chromium"], headless=True, args=NAIVE_FLAGS
        )
        try:
            page = await browser.new_page(
                viewport={"width": spec["width"], "height": spec["height"]},
                extra_http_headers={"Authorization": f"Bearer {spec['token']}"},
            )
            await page.goto(url, wait_until="networkidle", timeout=30_000)
            png = await page.screenshot(type="png")
        finally:
            await browser.close()
        return "ok", {}, png

    def chromium_memory(self) -> dict[str, int]:
        return {}

    def launches(self) -> int:
        return 0

    def open_contexts(self) -> int:
        return 0

    async def close(self) -> None:
        if self.playwright is not None:
            await self.playwright.stop()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    impl: _Product | _Naive = _Product(spec) if spec["impl"] == "product" else _Naive(spec)
    await impl.start()
    try:
        for w in range(spec.get("warmup", 0)):  # not measured: first navigation, dashboard lookup
            await impl.capture(spec, spec["first_index"] - 1 - w)
        return await _measure(impl, spec)
    finally:
        await impl.close()


async def _measure(impl: _Product | _Naive, spec: dict[str, Any]) -> dict[str, Any]:
    first, count = spec["first_index"], spec["count"]
    every = int(spec.get("memory_every", 0)) or count  # memory mode: batches, sampled at rest
    check_every = int(spec.get("check_every", 1))  # check every n-th picture (all by default)
    check_now = bool(spec.get("memory_every"))  # memory mode: check at once, keep no picture
    gap = float(spec.get("gap_s", 0.0))
    captures: list[dict[str, Any]] = []
    images: dict[int, bytes | None] = {}
    drawn: dict[int, bool] = {}
    memory: list[dict[str, int]] = []

    async def worker(todo: Iterator[int]) -> None:
        for index in todo:
            if gap:  # an alert that arrives alone: the service is idle in between
                await asyncio.sleep(gap)
            start = time.time()
            cls, steps, image = await impl.capture(spec, index)
            end = time.time()
            captures.append(
                {"index": index, "start_ms": start * 1000, "end_ms": end * 1000, "cls": cls, "steps": steps}
            )
            if (index - first) % check_every == 0:
                if check_now:
                    drawn[index] = _looks_drawn(image)
                else:
                    images[index] = image

    cpu_before = _tree_cpu()
    elapsed = 0.0
    for batch_start in range(first, first + count, every):
        todo = iter(range(batch_start, min(batch_start + every, first + count)))
        started = time.time()
        await asyncio.gather(*(worker(todo) for _ in range(spec["concurrency"])))
        elapsed += time.time() - started
        if spec.get("memory_every"):
            memory.append(await _memory_at_rest(impl, len(captures), spec["concurrency"]))
    cpu_after = _tree_cpu()
    cpu = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_after.items()}
    drawn.update({i: _looks_drawn(img) for i, img in images.items()})  # after the clock stopped
    for c in captures:
        c["drawn"] = drawn.get(c["index"])
    return {"captures": captures, "elapsed_s": elapsed, "memory": memory, "launches": impl.launches(), "cpu_s": cpu}


async def _memory_at_rest(impl: _Product | _Naive, done: int, pool: int) -> dict[str, int]:
    """Memory once the captures of a batch are over and the browser is quiet again: worn-out
    contexts closed, at most ``pool`` idle ones (their pages reset), after a garbage collection
    (waits at most 5 s)."""
    deadline = time.monotonic() + 5.0
    while impl.open_contexts() > pool and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    gc.collect()
    browser = await asyncio.to_thread(impl.chromium_memory)
    return {"captures": done, "python_rss_kb": _rss_kb(os.getpid()), **browser, "open_contexts": impl.open_contexts()}


def main() -> None:
    spec = json.loads(sys.argv[1])
    out = asyncio.run(run(spec))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
