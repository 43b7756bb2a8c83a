"""One delivery as the status page shows it: built from what the pipeline has when it logs it.

``delivery_record`` is pure: the outbox row, the outcome, the pictures (``PictureSet``, or the
stored images of a follow-up) become a ``DeliveryRecord`` whose pictures carry their bytes
(exactly what was uploaded) until the journal has written them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.delivery.outbox import FailResult, OutboxItem
from sidecar.delivery.pictures import PictureSet
from sidecar.flashduty.errors import FlashdutyError

__all__ = ["DeliveryRecord", "PictureRecord", "delivery_record"]


@dataclass
class PictureRecord:
    alt: str
    cls: str  # capture class (ok, no_data, timeout, ...), "earlier" (uploaded before), "pending"
    outcome: str  # upload: uploaded | earlier | rate_limited | failed | pending | none
    steps_ms: dict[str, int] = field(default_factory=dict)
    capture_ms: int | None = None
    image_key: str | None = None
    reason: str | None = None  # why it is not in the push
    size: int | None = None
    content_type: str | None = None
    image: bytes | None = field(default=None, repr=False)
    file: str | None = None  # set by the journal once written

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "image"}
        return out


@dataclass
class DeliveryRecord:
    at: float  # wall time
    rule: str
    status: str
    alert_key: str
    title: str
    outcome: str  # delivered | followup | dropped_stale | retry | dead_letter | superseded
    followup: bool
    duration_ms: int
    error: str | None
    pictures: list[PictureRecord]


def delivery_record(
    item: OutboxItem,
    outcome: str,
    pics: PictureSet | None,
    counts: tuple[int, int, float],
    *,
    at: float,
    error: FlashdutyError | None = None,
    fail: FailResult | None = None,
) -> DeliveryRecord:
    ev = item.event
    text = None
    if error is not None:
        text = str(error) if fail is None else f"{fail.outcome} after {fail.attempts} attempt(s): {error}"
    pictures: list[PictureRecord] = []
    if pics is not None:
        for p in pics.pictures:
            earlier = p.upload_outcome == "earlier"
            done = p.state == "done"
            pictures.append(
                PictureRecord(
                    alt=p.alt,
                    cls=p.cls or ("earlier" if earlier else "pending"),
                    outcome=p.upload_outcome if p.state != "uploading" else "pending",
                    steps_ms={k: round(v * 1000) for k, v in p.steps.items()},
                    capture_ms=None if p.capture_ms is None else round(p.capture_ms),
                    image_key=p.image_key,
                    reason=None if done else p.missing_reason("the image budget"),
                    size=len(p.image) if p.image else None,
                    content_type=p.content_type,
                    image=p.image,
                )
            )
    else:
        pictures = [PictureRecord(alt=i.alt, cls="earlier", outcome="earlier", image_key=i.src) for i in item.images]
    return DeliveryRecord(
        at=at,
        rule=ev.rule,
        status=ev.status,
        alert_key=ev.alert_key,
        title=ev.title,
        outcome=outcome,
        followup=item.is_followup,
        duration_ms=round(counts[2] * 1000),
        error=text,
        pictures=pictures,
    )
