"""Where in its interval a rule runs, and the timestamp its evaluation gets.

An interval rule runs at a fixed, deterministic offset inside its interval (from a CRC-32 of its
name), the same on every replica and across restarts, so rules spread over the interval instead
of all querying at once. The evaluation timestamp is that slot (ms-rounded), not the wall time
the job happened to wake up at: a wake-up up to 50 ms early still counts as its slot. A cron rule
is evaluated at the time it runs.
"""

from __future__ import annotations

import math
import zlib

from sidecar.config import RuleConfig

__all__ = ["eval_time", "slot_offset"]


def slot_offset(name: str, interval: float) -> float:
    """Deterministic offset of a rule inside its interval, in [0, interval)."""
    return zlib.crc32(name.encode()) / 2**32 * interval


def eval_time(rule: RuleConfig, now: float) -> float:
    """The timestamp of an evaluation of ``rule`` started at ``now``."""
    if rule.cron is not None:
        return now
    interval = rule.interval
    offset = slot_offset(rule.name, interval)
    slot = offset + math.floor((now - offset + 0.05) / interval) * interval
    return round(slot, 3)
