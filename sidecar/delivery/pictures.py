"""The pictures of one alert event: capture every panel and upload it, all at once, in the
background, so the pipeline can push when the image budget runs out with whatever is ready.

Each panel is one task: ``capture`` (the capture service bounds its own concurrency and never
raises for a failed capture) → ``upload`` (deduplicated, rate limited); both wait by the picture's
rank (``sidecar.priority.picture_rank`` of the event's priority; a storm's shared picture first). The
tasks are never cancelled by the budget: a picture that is late for the push can still reach a
follow-up. Whatever goes wrong becomes a one-line ``reason`` that the push states in the
description ("capture timed out after 20s", "Grafana answered with the login page", ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sidecar.delivery.outbox_db import StoredImage
from sidecar.flashduty.errors import FlashdutyError, FlashdutyRateLimited
from sidecar.flashduty.payload import MAX_HREF
from sidecar.model import PanelCapture
from sidecar.priority import picture_rank

__all__ = ["CaptureLike", "CaptureResultLike", "Picture", "PictureSet", "UploaderLike"]

log = logging.getLogger("sidecar.delivery")

State = Literal["capturing", "uploading", "done", "failed"]


class CaptureResultLike(Protocol):
    """What the pipeline reads from ``sidecar.capture.result.CaptureResult``."""

    @property
    def usable(self) -> bool: ...
    @property
    def image(self) -> bytes | None: ...
    @property
    def content_type(self) -> str | None: ...  # set with ``image``
    @property
    def detail(self) -> str: ...
    @property
    def cls(self) -> Any: ...  # CaptureClass, a StrEnum
    @property
    def alt(self) -> str: ...
    @property
    def url(self) -> str: ...


class CaptureLike(Protocol):
    async def capture(
        self, req: PanelCapture, *, timeout: float | None = None, rank: int = ...
    ) -> CaptureResultLike: ...
    def panel_url(self, req: PanelCapture) -> str: ...
    def link(self, render_url: str) -> str: ...  # the panel in Grafana's UI, at Grafana's public address


class UploaderLike(Protocol):
    async def upload(self, data: bytes, *, content_type: str, priority: int, timeout: float | None = None) -> str: ...
    def capacity(self, seconds: float) -> int: ...


def _capture_reason(cls: str, detail: str, timeout: float) -> str:
    if cls == "timeout":
        return f"capture timed out after {timeout:g}s"
    if cls == "login":
        return "Grafana answered with the login page (check grafana.token or grafana.basic_auth)"
    if cls == "not_found":
        return f"not found in Grafana ({detail})" if detail else "not found in Grafana"
    if cls in ("not_loaded", "org_access"):
        return detail or f"capture failed ({cls})"
    return f"capture failed: {detail}" if detail else f"capture failed ({cls})"


def _upload_reason(e: FlashdutyError) -> str:
    if isinstance(e, FlashdutyRateLimited):
        return "upload still queued behind the rate limit"
    what = e.code or (f"HTTP {e.status}" if e.status else type(e).__name__)
    return f"upload failed ({what})"


@dataclass
class Picture:
    """One panel of the event, as far as it got."""

    panel: int
    req: PanelCapture
    alt: str
    href: str | None
    state: State = "capturing"
    cls: str | None = None
    capture_ms: float | None = None
    image_key: str | None = None
    reason: str | None = None  # why it is missing, once it failed
    upload_outcome: str = "none"  # none | uploaded | rate_limited | failed
    image: bytes | None = field(default=None, repr=False)  # the bytes captured (and uploaded), for the journal
    content_type: str | None = None
    steps: dict[str, float] = field(default_factory=dict)  # seconds per named capture step
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def stored(self) -> StoredImage:
        assert self.image_key is not None
        return StoredImage(self.panel, self.image_key, self.alt, self.href)

    def missing_reason(self, waited: str) -> str:
        """Why it is not in a push made now, after ``waited`` (e.g. "the 15s image budget")."""
        if self.reason:
            return self.reason
        if self.state == "uploading":
            return "upload still queued behind the rate limit"
        return f"capture not finished within {waited}"


class PictureSet:
    """Every picture of one event; ``start`` once, then ``wait`` as often as needed."""

    def __init__(
        self,
        panels: Sequence[PanelCapture],
        *,
        have: Sequence[StoredImage],
        capture: CaptureLike,
        uploader: UploaderLike,
        priority: int,
        capture_timeout: float,
        shared: bool = False,  # a storm's shared picture (``storm.py``): ranked before own pictures
        upload_deadline: float | None,  # on ``clock``
        clock: Callable[[], float] = time.monotonic,
        keep: Callable[[bytes, str, str], None] | None = None,  # (bytes, content type, image_key) once uploaded
    ) -> None:
        self._capture = capture
        self._uploader = uploader
        self._rank = picture_rank(priority, shared=shared)
        self._capture_timeout = capture_timeout
        self._upload_deadline = upload_deadline
        self._clock = clock
        self._keep = keep
        known = {s.panel: s for s in have}
        self.pictures: list[Picture] = []
        for i, req in enumerate(panels):
            pic = Picture(i, req, alt=req.alt, href=self._href(req))
            if i in known:  # uploaded by an earlier attempt: no new capture
                s = known[i]
                pic.alt, pic.href, pic.image_key, pic.state, pic.upload_outcome = (
                    s.alt,
                    s.href,
                    s.src,
                    "done",
                    "earlier",
                )
            self.pictures.append(pic)

    def _href(self, req: PanelCapture) -> str | None:
        try:
            url = self._capture.link(self._capture.panel_url(req))
        except Exception:  # a link is a nicety, never a reason to fail
            return None
        return url if url and len(url) <= MAX_HREF else None

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        for pic in self.pictures:
            if pic.state == "capturing":
                pic.task = asyncio.create_task(self._run(pic), name=f"picture {pic.alt}")

    async def _run(self, pic: Picture) -> None:
        started = self._clock()
        try:
            result = await self._capture.capture(pic.req, timeout=self._capture_timeout, rank=self._rank)
        except Exception as e:  # the capture service should not raise; the alert goes on anyway
            log.warning("capture of %r raised %s", pic.alt, type(e).__name__, exc_info=True)
            pic.cls, pic.state, pic.reason = "error", "failed", f"capture failed: {type(e).__name__}"
            return
        finally:
            pic.capture_ms = (self._clock() - started) * 1000
        pic.cls = str(getattr(result.cls, "value", result.cls))
        pic.image, pic.content_type = result.image, result.content_type
        pic.steps = dict(getattr(result, "steps", None) or {})
        pic.alt = result.alt.strip() or pic.alt  # configured title, else the one Grafana showed
        link = self._capture.link(result.url) if result.url else ""
        if link and len(link) <= MAX_HREF:
            pic.href = link  # with the dashboard slug, once it was looked up
        if not result.usable or not result.image:
            pic.state = "failed"
            pic.reason = _capture_reason(pic.cls, result.detail, self._capture_timeout)
            return
        if not result.content_type:  # the capture service always sets it with the image
            pic.state, pic.reason = "failed", "capture failed: a picture without a content type"
            return
        pic.state = "uploading"
        try:
            timeout = None if self._upload_deadline is None else self._upload_deadline - self._clock()
            pic.image_key = await self._uploader.upload(
                result.image, content_type=result.content_type, priority=self._rank, timeout=timeout
            )
        except FlashdutyError as e:
            pic.state, pic.reason = "failed", _upload_reason(e)
            pic.upload_outcome = "rate_limited" if isinstance(e, FlashdutyRateLimited) else "failed"
            return
        except Exception as e:
            log.warning("upload of %r raised %s", pic.alt, type(e).__name__, exc_info=True)
            pic.state, pic.reason, pic.upload_outcome = "failed", f"upload failed ({type(e).__name__})", "failed"
            return
        pic.state, pic.upload_outcome = "done", "uploaded"
        if self._keep is not None:  # the status page keeps it, late for the push or not
            self._keep(result.image, result.content_type, pic.image_key)

    def _running(self) -> list[asyncio.Task[None]]:
        return [p.task for p in self.pictures if p.task is not None and not p.task.done()]

    async def wait(
        self, until: float, hurry: asyncio.Event | None = None, hurry_at: Callable[[], float] | None = None
    ) -> None:
        """Until every picture is settled or ``clock() >= until``. When ``hurry`` is set (the
        pipeline is stopping), ``hurry_at()`` may bring ``until`` forward."""
        while running := self._running():
            if hurry is not None and hurry.is_set() and hurry_at is not None:
                until = min(until, hurry_at())
            left = until - self._clock()
            if left <= 0:
                return
            waiters: set[asyncio.Future[Any]] = set(running)
            hurry_task = None
            if hurry is not None and not hurry.is_set():
                hurry_task = asyncio.ensure_future(hurry.wait())
                waiters.add(hurry_task)
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if hurry_task is not None:
                    hurry_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await hurry_task

    async def aclose(self) -> None:
        """Cancel the pictures still in progress and wait for them to end."""
        running = self._running()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # ------------------------------------------------------------------ reading

    @property
    def pending(self) -> bool:
        """Some picture may still arrive."""
        return bool(self._running())

    @property
    def total(self) -> int:
        return len(self.pictures)

    def ready(self) -> list[StoredImage]:
        return [p.stored() for p in self.pictures if p.state == "done"]

    def notes(self, waited: str, instead: dict[int, str] | None = None) -> list[str]:
        """One line per missing picture, for the description; ``instead``: the line for a panel
        index whose place a storm's shared picture takes."""
        alt = instead or {}
        return [
            alt.get(p.panel) or f'Picture "{p.alt}" missing: {p.missing_reason(waited)}'
            for p in self.pictures
            if p.state != "done"
        ]

    def log_fields(self) -> dict[str, list[dict[str, Any]]]:
        captures = [
            {"alt": p.alt, "cls": p.cls or ("earlier" if p.upload_outcome == "earlier" else "pending"),
             "ms": None if p.capture_ms is None else round(p.capture_ms), **({"reason": p.reason} if p.reason else {})}
            for p in self.pictures
        ]  # fmt: skip
        uploads = [
            {"alt": p.alt, "outcome": p.upload_outcome if p.state != "uploading" else "pending"} for p in self.pictures
        ]
        return {"captures": captures, "uploads": uploads}
