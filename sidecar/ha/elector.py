"""Leader election on a Lease, the loop of client-go's ``tools/leaderelection/leaderelection.go``.

* **acquire**: every ``retry_period``, ``try_acquire_or_renew``: read the Lease (create it when
  there is none); a Lease held by another replica is left alone until ``lease_duration`` has passed
  since this replica last *saw it change* (its own clock, never the holder's ``renewTime``: clocks
  of two pods need not agree); then write it with this identity, ``leaseTransitions + 1``. The
  write carries the read's ``resourceVersion``: when two replicas try at once, one gets a 409.
* **renew**: the leader writes ``renewTime`` every ``retry_period``; when no renewal succeeded for
  ``renew_deadline`` it stops leading (``on_stop``) and goes back to acquiring.
* **the fence**: ``may_send()`` is true only while leading *and* less than ``renew_deadline`` has
  passed since the last successful write started (``time.monotonic``, which keeps counting while
  the process is stopped). ``renew_deadline < lease_duration``, so a leader that cannot renew has
  stopped sending before any other replica may take the lease, even one frozen by SIGSTOP and
  woken after another took over: it is fenced before its first step.
* on a clean stop the leader releases the Lease (empty holder), so a follower takes over at once.
* a takeover that fails (``on_start`` raises) is logged once; the replica steps down, releases
  the Lease and keeps campaigning. The loop beats ``heartbeat`` every turn: a loop that died or
  hangs fails liveness (``replica.run_context``), it does not leave a healthy replica that never leads.

kubernetes_asyncio ships a ``leaderelection`` port, but it keeps no ``leaseTransitions``, runs one
term only and measures with the wall clock: this is the client-go loop, over ``lease.LeaseLock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sidecar.ha.lease import LeaderRecord, LeaseError, LeaseLock, now_micro

__all__ = ["Elector"]

log = logging.getLogger("sidecar.ha")


class Elector:
    def __init__(
        self,
        lock: LeaseLock,
        *,
        identity: str,
        address: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_start: Callable[[], Awaitable[None]],
        on_stop: Callable[[], Awaitable[None]],
        on_transition: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], datetime] = now_micro,
    ) -> None:
        self._lock, self.identity, self.address = lock, identity, address
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._on_start, self._on_stop, self._on_transition = on_start, on_stop, on_transition
        self._clock, self._sleep, self._wall = clock, sleep, wall
        self.observed = LeaderRecord()
        self.observed_at = -math.inf
        self.leading = False
        self.renewed_at = -math.inf  # when the last successful write started
        self.last_error: str | None = None
        self.takeover_error: str | None = None  # the last failed takeover (logged once), until one succeeds
        self.heartbeat: float | None = None  # clock of the loop's last turn (liveness: ``HEARTBEAT_ALLOWANCE``)

    # ------------------------------------------------------------------ what the others read

    def may_send(self) -> bool:
        """Leading, and the lease surely still ours: the fence in front of every send."""
        return self.leading and self._clock() < self.renewed_at + self.renew_deadline

    @property
    def leader(self) -> str:
        """The holder last observed ("" when none, or its lease has run out unrenewed)."""
        holder = self.observed.holder
        if holder == self.identity:
            return holder if self.may_send() else ""
        return holder if holder and self._clock() < self.observed_at + self.lease_duration else ""

    @property
    def leader_address(self) -> str:
        """Where the leader takes forwarded events ("" when there is none, or it is this replica)."""
        leader = self.leader
        return self.observed.address if leader and leader != self.identity else ""

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Acquire, lead until a renewal fails, step down, again; until cancelled."""
        try:
            while True:
                await self._acquire()
                self.leading = True
                log.info("became the leader of lease %s", self._lock.describe(), extra={"identity": self.identity})
                try:
                    await self._on_start()
                except Exception as e:  # a failed takeover: step down (the lease goes) and try again
                    if self.takeover_error is None:
                        log.exception("taking over failed; stepping down", extra={"identity": self.identity})
                    self.takeover_error = f"{type(e).__name__}: {e}"
                    await self._step_down(f"taking over failed: {self.takeover_error}")
                    await self._release_quietly()
                    await self._sleep(self.retry_period)
                    continue
                self.takeover_error = None
                await self._renew()
                await self._step_down("could not renew the lease within renew_deadline")
        finally:
            if self.leading:
                await self._step_down("shutting down")
                await self._release_quietly()

    async def _release_quietly(self) -> None:
        """Give the lease back within ``retry_period``; a failure only means the others wait it out."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.retry_period):
                await self._release()

    async def _acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            self.heartbeat = self._clock()
            await self._sleep(self.retry_period)
        self.heartbeat = self._clock()

    async def _renew(self) -> None:
        while True:
            self.heartbeat = self._clock()
            await self._sleep(self.retry_period)
            while True:
                remaining = self.renewed_at + self.renew_deadline - self._clock()
                if remaining <= 0:
                    return
                try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    async with asyncio.timeout(remaining):  # that arrives as the call completes
                        ok = await self.try_acquire_or_renew()
                except TimeoutError:
                    return
                if ok:
                    break
                if not self._observed_self():
                    return  # another replica holds it now (we were stopped, or lost a race)
                await self._sleep(
                    min(self.retry_period, max(0.0, self.renewed_at + self.renew_deadline - self._clock()))
                )

    async def _step_down(self, why: str) -> None:
        self.leading = False
        log.warning(
            "stopped leading lease %s: %s; leader now: %s",
            self._lock.describe(), why, self.leader or "none known",
            extra={"identity": self.identity, "leader": self.leader},
        )  # fmt: skip
        await self._on_stop()

    def _observed_self(self) -> bool:
        return self.observed.holder == self.identity

    async def try_acquire_or_renew(self) -> bool:
        started, now = self._clock(), self._wall()
        rec = LeaderRecord(
            holder=self.identity,
            lease_duration=max(1, math.ceil(self.lease_duration)),
            acquire_time=now,
            renew_time=now,
            address=self.address,
        )
        try:
            old = await self._lock.get()
            if old is None:
                if not await self._lock.create(rec):
                    return False
                self._observe(rec)
                self.renewed_at = started
                return True
            if old != self.observed:
                self._observe(old)
            if old.holder and not self._observed_self() and self.observed_at + self.lease_duration > self._clock():
                return False  # held by another and not yet expired
            if self._observed_self():
                rec = dataclasses.replace(rec, acquire_time=old.acquire_time, transitions=old.transitions)
            else:
                rec = dataclasses.replace(rec, transitions=old.transitions + 1)
            if not await self._lock.update(rec):
                return False  # 409: someone else wrote in between
        except LeaseError as e:
            if self.last_error != str(e):
                log.warning("lease %s: %s", self._lock.describe(), e)
            self.last_error = str(e)
            return False
        self.last_error = None
        self._observe(rec)
        self.renewed_at = started
        return True

    def _observe(self, rec: LeaderRecord) -> None:
        before = self.observed.holder
        self.observed, self.observed_at = rec, self._clock()
        if rec.holder != before:
            log.info(
                "lease %s: leader %s → %s (this replica: %s)",
                self._lock.describe(), before or "none", rec.holder or "none", self.identity,
                extra={"previous_leader": before, "leader": rec.holder, "identity": self.identity},
            )  # fmt: skip
            if self._on_transition is not None:
                self._on_transition(before, rec.holder)

    async def look(self) -> None:
        """Read the Lease once, outside the loop (a replica that stopped: who leads now?)."""
        with contextlib.suppress(LeaseError):
            rec = await self._lock.get()
            if rec is not None and rec != self.observed:
                self._observe(rec)

    async def _release(self) -> None:
        """Give the lease up (client-go ReleaseOnCancel): the next replica need not wait it out.
        Read afresh first: a renewal cancelled mid-flight may have left the read behind."""
        for _ in range(2):
            current = await self._lock.get()
            if current is None or current.holder != self.identity:
                return
            rec = LeaderRecord(lease_duration=1, transitions=current.transitions)
            if await self._lock.update(rec):
                self._observe(rec)
                return
