"""What a follower receives reaches Flashduty through the leader: ``POST /ha/events``.

A webhook or Alertmanager-API call that reaches a follower is handled exactly as on a single
replica — diffed against the rule state, put durably in the outbox, then answered 2xx — so the
sender's 2xx always means "durable". Only the dispatching differs: a follower's outbox is drained
by the ``Forwarder`` instead of the delivery pipeline. It claims the due rows (the same claims,
per alert_key in order), posts them to the leader's ``/ha/events`` (the address the leader wrote
on the Lease), and acks them once the leader answered 200, which it does only after its own
outbox holds them durably. When there is no leader, or it cannot be reached, the rows are
released and stay here: the next leader gets them, or this replica delivers them itself when it
becomes the leader. Follow-ups (late pictures of an alert this replica pushed while it led) are
dropped: the alert went out, the pictures are best effort.

A batch holds at most ``BATCH`` events and stays below the leader's body limit
(``server.webhook_max_body``). One the leader refuses as it is (413 too large, 400/422 malformed)
is split in halves down to the single event it refuses, which is dead-lettered with the
leader's answer (``flashduty-sidecar dead-letters``): one bad event never blocks the ones behind it.

So every accepted event is delivered by the one leader, through its one upload queue: across
replicas the account's upload limit is never exceeded. The endpoint requires the webhook token
(``server.webhook_token``, which ``ha.mode: kubernetes`` makes mandatory; compared in constant
time), and refuses everything when none is set; a replica that is not leading answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from sidecar.delivery.outbox import Outbox, OutboxItem
from sidecar.ingest.request import authorized
from sidecar.model import AlertEvent

__all__ = ["BATCH", "Forwarder", "make_events_handler"]

log = logging.getLogger("sidecar.ha")

BATCH = 100
IDLE = 0.5  # seconds between looks at an empty outbox (a put kicks it sooner)
BACKOFF = 1.0  # after the leader could not take a batch
PATH = "/ha/events"
REFUSED = (400, 413, 422)  # the leader will never take this batch as it is: split it, dead-letter the culprit


class Forwarder:
    """Drains this follower's outbox into the leader's (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        leader_address: Callable[[], str],
        token: Callable[[], str | None],
        timeout: float,
        max_body: int = 1024**2,
    ) -> None:
        self._outbox, self._address, self._token = outbox, leader_address, token
        self.max_batch_bytes = max(1, max_body - 4096)  # below the leader's server.webhook_max_body
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._wake = asyncio.Event()
        self.forwarded = 0
        self.last_error: str | None = None

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while True:
                self._wake.clear()
                pause = IDLE
                target = self._address()
                if target:
                    items = self._claim()
                    if items:
                        ok = await self._send(session, target, items)
                        pause = 0.0 if ok else BACKOFF
                with contextlib.suppress(TimeoutError):
                    if pause:
                        async with asyncio.timeout(pause):  # not wait_for (see elector._renew)
                            await self._wake.wait()

    async def flush(self, within: float, *, look: Callable[[], Awaitable[None]], poll: float) -> int:
        """Shutdown: hand every row to the leader within ``within`` seconds (``look`` reads the
        Lease again while none is known); how many rows stay in this replica's outbox."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        self._outbox.recover()  # nothing of this replica is in flight any more
        self._outbox.due_now()  # rows waiting out a backoff go too
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while self._outbox.pending_count() and (left := end - loop.time()) > 0:
                target = self._address()
                if not target:
                    await look()
                    if not self._address():
                        await asyncio.sleep(min(poll, max(0.0, end - loop.time())))
                    continue
                items = self._claim()
                if not items:
                    break
                try:
                    async with asyncio.timeout(left):
                        ok = await self._send(session, target, items)
                except TimeoutError:
                    break
                if not ok:
                    await asyncio.sleep(min(BACKOFF, max(0.0, end - loop.time())))
        return self._outbox.pending_count()

    def _claim(self) -> list[tuple[OutboxItem, bytes]]:
        """Due rows with their encoded events, at most ``BATCH`` and ``max_batch_bytes`` (at least one)."""
        items: list[tuple[OutboxItem, bytes]] = []
        size = len(_body([]))
        while len(items) < BATCH and (item := self._outbox.claim()) is not None:
            if item.is_followup:
                self._outbox.drop(item.id)
                continue
            encoded = item.event.to_json().encode()
            if items and size + len(encoded) + 2 > self.max_batch_bytes:
                self._outbox.release(item.id)  # the next batch's first
                break
            items.append((item, encoded))
            size += len(encoded) + 2
        return items

    async def _send(self, session: aiohttp.ClientSession, target: str, items: list[tuple[OutboxItem, bytes]]) -> bool:
        try:
            return await self._post(session, target, items)
        except asyncio.CancelledError:
            self._release(items)  # the leader may have them too: it coalesces by alert_key
            raise

    async def _post(self, session: aiohttp.ClientSession, target: str, items: list[tuple[OutboxItem, bytes]]) -> bool:
        """Post a batch; a batch the leader refuses (400, 413, 422) is split down to the one event
        it refuses, which is dead-lettered with the leader's answer: it never blocks the others."""
        token = self._token()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        error: str | None = None
        status = 0
        try:
            async with session.post(target + PATH, data=_body([e for _, e in items]), headers=headers) as resp:
                status = resp.status
                if status != 200:
                    error = f"{target}{PATH} answered {status}: {(await resp.text())[:200]}"
        except (aiohttp.ClientError, TimeoutError) as e:
            error = f"{target}{PATH}: {type(e).__name__}: {e}"
        if error is not None and status in REFUSED:
            if len(items) > 1:
                half = len(items) // 2
                first = await self._post(session, target, items[:half])
                return await self._post(session, target, items[half:]) and first
            ((item, _),) = items
            self._outbox.fail(item.id, f"the leader refused the forwarded event: {error}", retryable=False)
            log.error("the leader refused a forwarded event (%s); dead-lettered: %s", item.event.alert_key, error)
            return True
        if error is not None:
            self._release(items)
            if error != self.last_error:
                log.warning("could not forward %d event(s) to the leader: %s", len(items), error)
            self.last_error = error
            return False
        for item, _ in items:
            self._outbox.ack(item.id)
        self.forwarded += len(items)
        self.last_error = None
        log.info("forwarded %d event(s) to the leader at %s", len(items), target, extra={"events": len(items)})
        return True

    def _release(self, items: list[tuple[OutboxItem, bytes]]) -> None:
        for item, _ in items:
            self._outbox.release(item.id)  # a row already acked or dead-lettered is gone: nothing happens


def _body(events: list[bytes]) -> bytes:
    return b'{"events": [' + b", ".join(events) + b"]}"


def make_events_handler(
    *,
    leading: Callable[[], bool],
    put: Callable[[AlertEvent], None],
    token: Callable[[], str | None],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The leader's side: 200 once every event is durable in its outbox."""

    async def handler(request: web.Request) -> web.Response:
        expected = token()
        if not expected or not authorized(request, expected):  # no token configured: nobody may inject
            return web.json_response({"error": "unauthorized"}, status=401)
        if not leading():
            return web.json_response({"error": "this replica is not the leader"}, status=503)
        try:
            raw = await request.json()
            events = [AlertEvent.from_dict(e) for e in raw["events"]]
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"malformed body: {type(e).__name__}"}, status=400)
        for ev in events:
            put(ev)
        return web.json_response({"accepted": len(events)})

    return handler
