"""Delivery: outbox → pictures (within the image budget) → Flashduty push → ack.

The first rule of the product is that the alert matters more than the picture, so the shape
of the pipeline follows from "no alert waits longer than ``capture.image_budget`` for its
pictures", even in a burst:

* a **dispatcher** claims every due event from the outbox as soon as it is put (``kick``), up
  to ``max_in_flight`` at once, and starts one delivery task per event. Claims are not rationed
  by a small worker pool: a pool of N workers each holding an event for up to the budget would
  delay the (N+1)-th alert of a burst by a whole budget. Capture and upload concurrency are
  bounded where they are spent (the capture service, the upload rate limiter);
* a delivery captures all panels and uploads each usable picture concurrently (upload priority
  = event priority), waits until they are all settled or its picture deadline passes, and
  pushes with what it has; each missing picture gets a line in the description saying why.
  The deadline makes the budget hold end to end (``PipelineSettings.picture_deadline``);
* storms (``storm.py``): when one rule fires for more instances than the upload quota can
  picture within the budget, the first push of each carries one shared picture of the rule's
  panel, and the alert's own picture follows as its follow-up;
* pushes go through ``delivery.workers`` slots (``PushSlots``, ``push_slots.py``), served by priority (Ok first);
  the push is never bounded by a deadline: the alert must go out;
* late pictures keep coming in the background (``background.py``); when they are in, the event's **follow-up** is
  put in the outbox (a picture that came in during the push itself, after the payload was
  built, is late too): a durable row of kind ``followup`` carrying the already uploaded image
  keys (no re-capture), pushed as an update with the same status and title and every picture.
  It is dropped if a newer event of the same alert_key was sent or queued meanwhile (the outbox
  checks ``sent`` and the queue when it is put and again when it is claimed). ``Ok`` events
  get no follow-up: their pictures are best effort within the budget;
* failure: retryable errors go back to the outbox with backoff (pictures already uploaded are
  kept on the row), permanent ones (401, other 4xx) go to the dead letters at once; a 429 is
  waited out inside the client and never spends an attempt.

How a delivery ends (ack, follow-up, retry, dead letter, the canonical log line of ``logline.py``)
is ``settle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sidecar.delivery.background import Background
from sidecar.delivery.outbox import FOLLOWUP_PRIORITY_OFFSET, Outbox, OutboxItem
from sidecar.delivery.outbox_db import StoredImage
from sidecar.delivery.pictures import CaptureLike, PictureSet, UploaderLike
from sidecar.delivery.push_slots import PipelineSettings, PushSlots
from sidecar.delivery.settle import Settler
from sidecar.delivery.storm import Member, Storms
from sidecar.flashduty.client import FlashdutyClient
from sidecar.flashduty.errors import FlashdutyError
from sidecar.flashduty.payload import ImageRef, build_payload
from sidecar.metrics import Metrics
from sidecar.status.journal import Journal

__all__ = ["DeliveryPipeline", "PipelineSettings"]

log = logging.getLogger("sidecar.delivery")

IDLE_POLL = 5.0  # dispatcher wakes at least this often (gauges, heartbeat)
MAX_IN_FLIGHT = 256
FOLLOWUP_WINDOW = 600.0  # how long late pictures may take before they are abandoned


class DeliveryPipeline:
    """Drains the outbox into Flashduty; see the module docstring."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        capture: CaptureLike,
        uploader: UploaderLike,
        client: FlashdutyClient,
        settings: PipelineSettings,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_in_flight: int = MAX_IN_FLIGHT,
        followup_window: float = FOLLOWUP_WINDOW,
        journal: Journal | None = None,
    ) -> None:
        self._outbox = outbox
        self._capture = capture
        self._uploader = uploader
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self._settings = settings
        self._max_in_flight = max_in_flight
        self._followup_window = followup_window
        self._journal = journal  # the status page's record of each delivery
        self._slots = PushSlots(settings.workers)
        self._wake = asyncio.Event()
        self._reset_run()
        self._inflight: set[asyncio.Task[None]] = set()
        self._background = Background(
            metrics=metrics, outbox=outbox, kick=self.kick, window=followup_window, clock=clock
        )
        self._storms = Storms(
            capture=capture, uploader=uploader, clock=clock, capture_timeout=lambda: self._settings.capture_timeout
        )
        self._settle = Settler(
            outbox=outbox, metrics=metrics, background=self._background, journal=journal, clock=clock,
            wall=wall, refresh=self._refresh_gauges, wake=self._wake.set, followup_window=followup_window,
        )  # fmt: skip
        self.heartbeat = clock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def settings(self) -> PipelineSettings:
        return self._settings

    def reconfigure(self, settings: PipelineSettings) -> None:
        """A config reload: budget, capture timeout, workers and reserved labels apply to the
        events claimed from now on (a delivery in flight finishes with what it started with)."""
        self._settings = settings
        self._slots.resize(settings.workers)

    def _reset_run(self) -> None:
        """The state of one run of the dispatcher (``start`` to ``stop``), fresh."""
        self._hurry = asyncio.Event()
        self._hurry_at = float("inf")
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Release the claims of a previous run and start dispatching."""
        if self._dispatcher is not None:
            raise RuntimeError("pipeline already started")
        self._outbox.recover()
        self._refresh_gauges()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="delivery dispatcher")
        self._dispatcher.add_done_callback(self._dispatcher_done)

    @staticmethod
    def _dispatcher_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # the outbox is unusable (disk full, file gone): liveness must fail, not hide it
            log.critical("delivery dispatcher died; no alert is being sent", exc_info=task.exception())

    def kick(self) -> None:
        """Something was put in the outbox: claim it now."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """The dispatcher is alive (for liveness, together with ``heartbeat``)."""
        return self._dispatcher is not None and not self._dispatcher.done()

    @property
    def idle(self) -> bool:
        """No delivery, follow-up wait or picture drain in progress."""
        return not self._inflight and not self._background.tasks

    async def stop(self, grace: float) -> None:
        """Stop claiming; let deliveries in flight finish within ``grace`` seconds.

        Pictures still missing when half the grace is gone are given up (the push goes without
        them); whatever is not pushed by the end stays in the outbox for the next start.
        """
        if self._dispatcher is None or self._stopping:
            return
        self._stopping = True
        now = self._clock()
        end = now + grace
        self._hurry_at = now + grace / 2
        self._hurry.set()
        self._wake.set()
        await asyncio.gather(self._dispatcher, return_exceptions=True)
        for tasks in (self._inflight, self._background.tasks):
            if tasks:
                await asyncio.wait(set(tasks), timeout=max(0.0, end - self._clock()))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._storms.close()
        self._refresh_gauges()

    # ------------------------------------------------------------------ dispatcher

    async def _dispatch(self) -> None:
        while not self._stopping:
            self.heartbeat = self._clock()
            self._wake.clear()
            while len(self._inflight) < self._max_in_flight and (item := self._outbox.claim()) is not None:
                task = asyncio.create_task(self._deliver_guarded(item), name=f"deliver {item.id}")
                self._inflight.add(task)
                task.add_done_callback(self._delivery_done)
            self._refresh_gauges()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_timeout()):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._wake.wait()

    def _idle_timeout(self) -> float:
        if len(self._inflight) >= self._max_in_flight:
            return IDLE_POLL  # a finishing delivery wakes us
        due = self._outbox.next_due()
        if due is None:
            return IDLE_POLL
        return min(IDLE_POLL, max(0.005, due - self._wall()))

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # its key may have a queued successor

    def _refresh_gauges(self) -> None:
        self._metrics.queue_depth.set(self._outbox.pending_count())
        self._metrics.oldest_event_age.set(self._outbox.oldest_pending_age(self._wall()))
        self._metrics.dead_letters.set(self._outbox.dead_letter_count())

    # ------------------------------------------------------------------ one event

    async def _deliver_guarded(self, item: OutboxItem) -> None:
        try:
            await self._deliver(item)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not keep the key's claim forever
            self._metrics.background_errors.labels(job="deliver").inc()
            log.exception("delivery of outbox event %d failed unexpectedly", item.id)
            with contextlib.suppress(Exception):
                self._outbox.fail(item.id, f"internal error: {type(e).__name__}: {e}", retryable=True)

    async def _deliver(self, item: OutboxItem) -> None:
        started = self._clock()
        ev = item.event
        pics: PictureSet | None = None
        member: Member | None = None
        shared: list[StoredImage] = []
        if item.is_followup:
            if not self._outbox.followup_is_current(item):
                self._outbox.drop(item.id)
                self._settle.line(item, "dropped_stale", started, None, len(item.images), len(ev.panels))
                return
            images, notes = list(item.images), list(item.notes)
        else:
            deadline = self._settings.picture_deadline(started, queued=max(0.0, self._wall() - item.created_at))
            pics = self._pictures(item, started, deadline)
            pics.start()
            member = self._storms.join(item, pics, deadline) if self._settings.shared_pictures else None
        try:
            if pics is not None:
                await pics.wait(deadline, self._hurry, lambda: self._hurry_at)
                shared, instead = self._storms.shared_for(member)
                images = sorted(pics.ready() + shared, key=lambda i: i.panel)
                notes = pics.notes(f"the {self._settings.image_budget:g}s image budget", instead)
            payload = build_payload(
                ev,
                [ImageRef(i.src, i.alt, i.href) for i in images],
                notes,
                allowed_reserved=self._settings.reserved.get(ev.rule, ()),
            )
            # a follow-up only adds pictures: it yields to every fresh alert
            priority = ev.priority + (FOLLOWUP_PRIORITY_OFFSET if item.is_followup else 0)
            async with self._slots.acquire(priority):
                await self._client.push_alert(payload, priority=priority)
        except FlashdutyError as e:
            self._settle.failed(item, e, pics, started)
            return
        except asyncio.CancelledError:  # stopping: give the claim back, keep what was uploaded
            self._outbox.release(item.id, images=pics.ready() if pics else ())
            if pics is not None:
                await pics.aclose()
            raise
        except Exception:  # a bug: stop the pictures too (the caller records the failure)
            if pics is not None:
                await pics.aclose()
            raise
        finally:
            self._storms.leave(member)
        self._outbox.ack(item.id)
        own = len(images) - len(shared)
        self._settle.delivered(item, started, pics, own, image_budget=self._settings.image_budget)

    def _pictures(self, item: OutboxItem, started: float, deadline: float) -> PictureSet:
        ok = item.event.status == "Ok"
        # an Ok's pictures are worth nothing after its push (no follow-up): bound them by its deadline
        window = deadline - started if ok else self._followup_window
        timeout = self._settings.capture_timeout
        return PictureSet(
            item.event.panels,
            have=item.images,
            capture=self._capture,
            uploader=self._uploader,
            priority=item.event.priority,
            capture_timeout=min(timeout, window) if ok else timeout,
            upload_deadline=started + window,
            clock=self._clock,
            keep=self._journal.keep if self._journal is not None else None,
        )
