"""What the pipeline takes of the config, and the push slots it bounds its pushes with.

``PipelineSettings`` is the pipeline's narrow view of the config (a reload hands it a new one);
``PushSlots`` lets at most ``delivery.workers`` pushes run at once, waiters served by priority
(``Ok`` first, then Critical, Warning, Info; FIFO within one: ``sidecar.priority``), resizable live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.config import Config
from sidecar.flashduty.payload import RESERVED_PREFIXES
from sidecar.priority import PrioritySlots

__all__ = ["MAX_PUSH_RESERVE", "PUSH_RESERVE", "PipelineSettings", "PushSlots"]

PUSH_RESERVE = 0.1  # share of the image budget kept for the push itself...
MAX_PUSH_RESERVE = 1.0  # ... at most this many seconds


class PushSlots(PrioritySlots):
    """At most ``n`` pushes at once; waiters are served by priority (``model.PRIORITY``), FIFO within one."""


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline reads of the config; a reload hands it a new one (``reconfigure``)."""

    image_budget: float
    capture_timeout: float
    workers: int
    reserved: Mapping[str, frozenset[str]] = field(default_factory=dict)  # rule → layer_*_reset_* it wrote
    shared_pictures: bool = True  # storms: a shared picture first (``storm.py``)

    def picture_deadline(self, started: float, *, queued: float) -> float:
        """When a delivery claimed at ``started`` stops waiting for pictures and pushes.

        The budget is end to end, from the event's put to Flashduty's answer: ``queued`` (time
        spent in the outbox) counts, and a reserve (10 % of the budget, at most 1 s) is kept for
        the push itself. An event already late (a retry, a restart) still gets the reserve for
        the pictures that are quick to get (capture cache, image-key cache).
        """
        reserve = min(MAX_PUSH_RESERVE, self.image_budget * PUSH_RESERVE)
        return started + max(reserve, self.image_budget - reserve - queued)

    @classmethod
    def from_config(cls, config: Config) -> PipelineSettings:
        """Per rule, the ``layer_*_reset_*`` labels its author wrote: only those pass (payload.py)."""
        return cls(
            image_budget=config.capture.image_budget,
            capture_timeout=config.capture.timeout,
            workers=config.delivery.workers,
            shared_pictures=config.delivery.shared_pictures,
            reserved={r.name: frozenset(k for k in r.labels if k.startswith(RESERVED_PREFIXES)) for r in config.rules},
        )
