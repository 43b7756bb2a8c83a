"""Storms: one rule fires for many instances at once, and the upload quota (5/s AND 50/min) cannot
give every alert its own picture within the image budget.

Every fresh firing delivery (not an ``Ok``: it gets no follow-up; not a follow-up) joins, for
each of its panels still to be pictured, the group of its rule and ``alertname`` and that panel
with its variables and time window left out (``group_key``). A group turns into a storm, once,
when it holds at least two alerts and

* the own pictures its alerts still wait for outnumber the uploads the quota admits before the
  earliest of their deadlines (``UploaderLike.capacity``), or
* half of a member's budget has passed, its own picture is still not there and at least
  ``SLOW_STORM`` alerts of the group wait for theirs (captures are what is slow: one more
  capture, ranked first, is cheaper than the queue; for two or three alerts it is not).

Then one **shared picture** is taken: the panel of the first member without the variables whose
values differ between the members (the per-instance ones, ``var-instance=…``), ranked just
before the own pictures of the storm's most severe status (``priority.picture_rank(shared=True)``),
so that it is captured and uploaded once, early. At its push, an alert whose own picture is not
there carries the shared one (alt ``… (all N alerts)``) and a line saying that its own follows.
The own pictures keep coming, in rank order (most severe first), and each reaches Flashduty as
its alert's follow-up (``background.py``). ``delivery.shared_pictures: false`` turns it off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.delivery.outbox import OutboxItem
from sidecar.delivery.outbox_db import StoredImage
from sidecar.delivery.pictures import CaptureLike, PictureSet, UploaderLike
from sidecar.model import AlertEvent, PanelCapture

__all__ = ["SLOW_STORM", "Member", "Storms", "group_key"]

SLOW_STORM = 4

log = logging.getLogger("sidecar.delivery")


def group_key(event: AlertEvent, req: PanelCapture) -> str:
    """The rule's panel, whatever the instance: no variable values, no time window."""
    return json.dumps(
        [event.rule, event.labels.get("alertname", ""), req.dashboard, req.panel, sorted(k for k, _ in req.vars),
         req.width, req.height, req.scale, req.theme, req.timezone, req.format, req.org_id],
        separators=(",", ":"),
    )  # fmt: skip


@dataclass(eq=False)
class Member:
    """One delivery in the storm groups of its panels (group key → panel index)."""

    item: OutboxItem
    pics: PictureSet
    deadline: float
    panels: dict[str, int] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None

    def waiting_on(self, key: str) -> bool:
        return self.pics.pictures[self.panels[key]].state != "done"


@dataclass(eq=False)
class _Group:
    key: str
    members: dict[int, Member] = field(default_factory=dict)  # outbox event id → member
    shared: PictureSet | None = None
    size: int = 0  # alerts in the group when the shared picture was taken


class Storms:
    """The storm groups of the deliveries in flight; see the module docstring."""

    def __init__(
        self,
        *,
        capture: CaptureLike,
        uploader: UploaderLike,
        clock: Callable[[], float],
        capture_timeout: Callable[[], float],
    ) -> None:
        self._capture = capture
        self._uploader = uploader
        self._clock = clock
        self._capture_timeout = capture_timeout
        self._groups: dict[str, _Group] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.started = 0  # storms detected (shared pictures taken)

    def join(self, item: OutboxItem, pics: PictureSet, deadline: float) -> Member | None:
        """``item``'s delivery, whose own ``pics`` have started, until ``deadline``."""
        if item.event.status == "Ok" or item.is_followup:
            return None
        member = Member(item, pics, deadline)
        for i, pic in enumerate(pics.pictures):
            if pic.state == "done":
                continue
            key = group_key(item.event, pic.req)
            group = self._groups.setdefault(key, _Group(key))
            group.members[item.id] = member
            group.size = max(group.size, len(group.members)) if group.shared is not None else group.size
            member.panels[key] = i
        if not member.panels:
            return None
        for key in member.panels:
            self._check(self._groups[key])
        now = self._clock()
        half = max(0.0, (deadline - now) / 2)
        member.timer = asyncio.get_running_loop().call_later(half, self._half_budget, member)
        return member

    def leave(self, member: Member | None) -> None:
        """The delivery pushed (or failed): it no longer counts in its groups."""
        if member is None:
            return
        if member.timer is not None:
            member.timer.cancel()
        for key in member.panels:
            group = self._groups.get(key)
            if group is None:
                continue
            group.members.pop(member.item.id, None)
            if not group.members:
                del self._groups[key]
                if group.shared is not None and group.shared.pending:  # nobody left to show it to
                    task = asyncio.ensure_future(group.shared.aclose())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    def shared_for(self, member: Member | None) -> tuple[list[StoredImage], dict[int, str]]:
        """For the push of ``member`` now: the shared pictures standing in for its own missing
        ones, and for each such panel index the line for the description."""
        images: list[StoredImage] = []
        notes: dict[int, str] = {}
        if member is None:
            return images, notes
        for key, i in member.panels.items():
            group = self._groups.get(key)
            own = member.pics.pictures[i]
            if group is None or group.shared is None or own.state == "done":
                continue
            shared = group.shared.pictures[0]
            if shared.state != "done" or shared.image_key is None:
                continue
            alt = f"{shared.alt} (all {group.size} alerts)"
            images.append(StoredImage(i, shared.image_key, alt, shared.href))
            notes[i] = f'Picture "{own.alt}" follows as an update; meanwhile "{alt}" shows the whole storm'
        return images, notes

    async def close(self) -> None:
        """Stop every shared picture still in progress (the pipeline is stopping)."""
        groups, self._groups = list(self._groups.values()), {}
        for group in groups:
            for member in group.members.values():
                if member.timer is not None:
                    member.timer.cancel()
            if group.shared is not None:
                await group.shared.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ deciding

    def _check(self, group: _Group) -> None:
        if group.shared is not None or len(group.members) < 2:
            return
        waiting = [m for m in group.members.values() if m.waiting_on(group.key)]
        if len(waiting) < 2:
            return
        earliest = min(m.deadline for m in waiting)
        capacity = self._uploader.capacity(earliest - self._clock())
        if len(waiting) > capacity:
            self._start(group, f"{len(waiting)} pictures wanted, about {capacity} uploads possible in time")

    def _half_budget(self, member: Member) -> None:
        member.timer = None
        for key in member.panels:
            group = self._groups.get(key)
            if group is None or group.shared is not None or not member.waiting_on(key):
                continue
            if sum(1 for m in group.members.values() if m.waiting_on(key)) >= SLOW_STORM:
                self._start(group, "half of the image budget gone, own pictures not there")

    def _start(self, group: _Group, why: str) -> None:
        members = list(group.members.values())
        reqs = [m.pics.pictures[m.panels[group.key]].req for m in members]
        common = tuple(kv for kv in reqs[0].vars if all(kv in r.vars for r in reqs[1:]))
        shared_req = dataclasses.replace(reqs[0], vars=common, title="")
        priority = min(m.item.event.priority for m in members)
        group.shared = PictureSet(
            [shared_req],
            have=(),
            capture=self._capture,
            uploader=self._uploader,
            priority=priority,
            shared=True,
            capture_timeout=self._capture_timeout(),
            upload_deadline=max(m.deadline for m in members),
            clock=self._clock,
        )
        group.size = len(members)
        group.shared.start()
        self.started += 1
        ev = members[0].item.event
        dropped = sorted({k for r in reqs for k, _ in r.vars} - {k for k, _ in common})
        log.info(
            "storm: %d alerts of %s share one picture of %s until their own (%s)",
            len(members), ev.rule, shared_req.alt, why,
            extra={"rule": ev.rule, "alerts": len(members), "without_vars": dropped},
        )  # fmt: skip
