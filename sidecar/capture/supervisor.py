"""Which browser is current: launching it, retiring it, relaunching it in the background until
one runs, and the outage while there is none (``outage``).

A browser is retired when it disconnects (crash, OOM kill) or when the manager recycles it: it
is no longer given out, the replacement is launched at once, and the old one is closed when its
in-flight captures are done. A launch that fails is recorded and retried after
``Outage.backoff``. Every launch is counted in
``browser_restarts_total{reason=start|crash|recycle_count|recycle_rss}``; the reason is the one
the previous browser was retired for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Playwright

from sidecar.capture.errors import CaptureError, first_line
from sidecar.capture.launcher import Chromium, launch, shut_down
from sidecar.capture.options import OptionSets
from sidecar.capture.outage import Outage
from sidecar.capture.pool import ContextPool
from sidecar.config import CaptureConfig
from sidecar.metrics import Metrics

__all__ = ["Instance", "Supervisor"]

log = logging.getLogger("sidecar.capture")

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


@dataclass(eq=False)
class Instance:
    """One launched browser, its context pool, and what the manager counts of it."""

    chromium: Chromium
    pool: ContextPool = field(init=False)
    captures: int = 0
    in_flight: int = 0
    retired: str = ""  # reason, once retired
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the process died or was closed
    sampling: bool = False  # its memory is being measured
    sampled_at: float = float("-inf")


class Supervisor:
    """The current browser of one manager; background work goes through ``spawn``."""

    def __init__(
        self,
        *,
        capture: CaptureConfig,
        metrics: Metrics,
        option_sets: OptionSets,
        spawn: Spawn,
        clock: Callable[[], float],
        sandbox: bool,
    ) -> None:
        self._cfg = capture
        self._metrics = metrics
        self._sets = option_sets
        self._spawn = spawn
        self._clock = clock
        self._sandbox = sandbox
        self._lock = asyncio.Lock()
        self._next_reason = "start"
        self._relaunching: asyncio.Task[None] | None = None
        self.playwright: Playwright | None = None
        self.executable: str | None = None
        self.current: Instance | None = None
        self.all: set[Instance] = set()
        self.closing = False
        self.stop = asyncio.Event()  # set when closing: cuts a relaunch back-off short
        self.outage = Outage(clock)
        self.launches = 0
        self.contexts_opened = 0

    def reconfigure(self, capture: CaptureConfig) -> None:
        """A config reload: the pools of every browser, and those launched later, use ``capture``."""
        self._cfg = capture
        for inst in self.all:
            inst.pool.reconfigure(capture)

    def open(self, playwright: Playwright, executable: str | None) -> None:
        self.playwright, self.executable = playwright, executable
        self.closing = False
        self.stop.clear()

    async def begin_close(self) -> None:
        """No launch starts from now on; one in progress finishes (and is in ``all``)."""
        self.closing = True
        self.stop.set()
        async with self._lock:
            pass

    async def close_all(self) -> None:
        self.current = None
        for inst in list(self.all):
            await self.close_instance(inst)
        self._next_reason = "start"
        self.outage.reset()

    def serving(self) -> Instance | None:
        """The current browser, unless it is retired or everything is closing."""
        inst = self.current
        return inst if inst is not None and self.serves(inst) else None

    def serves(self, inst: Instance) -> bool:
        """``inst`` takes contexts back and gets spares: it is current and nothing is closing."""
        return not self.closing and not inst.retired and inst is self.current

    async def ensure(self) -> Instance:
        """The current browser, launching one if there is none (or it died)."""
        async with self._lock:
            if self.closing:
                raise CaptureError("the capture service is closing")
            inst = self.current
            if inst is not None and not inst.retired and not inst.chromium.browser.is_connected():
                self.retire(inst, "crash")
                inst = None
            if inst is None or inst.retired:
                inst = await self._launch(self._next_reason)
                self.current = inst
            return inst

    def retire(self, inst: Instance, reason: str) -> None:
        """Stop giving out ``inst``; it closes once its in-flight captures are done."""
        if inst.retired:
            return
        inst.retired = reason
        inst.pool.drop()
        if inst is self.current:
            self.current = None
            self._next_reason = reason
            if reason == "crash":
                self.outage.down()
            self._relaunch_soon()
        if inst.in_flight == 0:
            self._spawn(self.close_instance(inst))

    async def close_instance(self, inst: Instance) -> None:
        if inst.closed.is_set():
            return
        inst.closed.set()
        if not inst.retired:
            inst.retired = "close"
        inst.pool.drop(cancel=True)  # closing the browser closes them
        await shut_down(inst.chromium)
        self.all.discard(inst)
        if self.current is inst:
            self.current = None

    def _relaunch_soon(self) -> None:
        if not self.closing and (self._relaunching is None or self._relaunching.done()):
            self._relaunching = self._spawn(self._relaunch())

    async def _relaunch(self) -> None:
        """Launch the replacement now, so the next capture finds a warm browser, and retry until
        one runs, waiting ``Outage.backoff`` before each attempt (not in a tight loop)."""
        while not self.closing:
            if delay := self.outage.backoff():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stop.wait()
            if self.closing:
                return
            try:
                inst = await self.ensure()
            except CaptureError:  # recorded by _launch: the next wait is longer
                continue
            for key in self._sets:  # the spares the old one had
                inst.pool.keep_spare(key)
            return

    def _on_disconnected(self, inst: Instance) -> None:
        inst.gone.set()
        if self.closing or inst.retired:
            return
        log.warning("browser disconnected (pid %s): relaunching", inst.chromium.pid)
        self.outage.crashed(inst.captures)
        self.retire(inst, "crash")

    async def _launch(self, reason: str) -> Instance:
        """Launch a browser (under the lock); a failure is recorded and retried in the background."""
        assert self.playwright is not None
        try:
            chromium = await launch(self.playwright, executable=self.executable, sandbox=self._sandbox)
        except Exception as e:
            error = e if isinstance(e, CaptureError) else CaptureError(f"cannot launch Chromium: {first_line(e)}")
            self.outage.launch_failed(str(error))
            self._relaunch_soon()
            raise error from None
        inst = Instance(chromium)
        inst.pool = ContextPool(
            chromium.browser,
            inst.gone,
            capture=self._cfg,
            option_sets=self._sets,
            live=lambda: self.serves(inst),
            spawn=self._spawn,
            opened=self._context_opened,
            clock=self._clock,
        )
        self.all.add(inst)
        chromium.browser.on("disconnected", lambda _b: self._on_disconnected(inst))
        self.launches += 1
        self._metrics.browser_restarts.labels(reason=reason).inc()
        self.outage.launched()
        where = self.executable or "Playwright's own"
        log.info(
            "browser launched (%s, pid %s, Chromium %s, %s)", reason, chromium.pid, chromium.browser.version, where
        )
        return inst

    def _context_opened(self) -> None:
        self.contexts_opened += 1
