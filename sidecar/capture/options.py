"""Browser-context options: what a capture's context is opened with, which pool fits it, and
which option sets are kept ready.

A context is opened for a panel's size, scale, time zone and colour scheme
(``context_options``). Contexts are pooled by every option except the viewport (``options_key``):
a page can change its viewport, not its scale or time zone. ``OptionSets`` remembers the two most
recent option sets (``SPARE_OPTION_SETS``) with their ``prepare``, so spares are opened for them
— again after a relaunch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from sidecar.capture.lease import Prepare
from sidecar.model import PanelCapture

__all__ = ["SPARE_OPTION_SETS", "OptionSets", "context_options", "options_key"]

SPARE_OPTION_SETS = 2  # pools are kept for this many distinct option sets (most recent first)


def context_options(req: PanelCapture) -> dict[str, Any]:
    """The context a capture needs: the panel's size, scale, time zone and colour scheme."""
    options: dict[str, Any] = {
        "viewport": {"width": req.width, "height": req.height},
        "device_scale_factor": req.scale,
        "locale": "en-US",
        "color_scheme": "light" if req.theme == "light" else "dark",
        "reduced_motion": "reduce",
        "service_workers": "block",
    }
    if req.timezone and req.timezone != "browser":
        options["timezone_id"] = req.timezone
    return options


def options_key(options: Mapping[str, Any]) -> str:
    """Which pool fits: every context option except the viewport (a page can change that)."""
    return json.dumps({k: v for k, v in options.items() if k != "viewport"}, sort_keys=True, default=str)


class OptionSets:
    """The option sets that get spares (at most ``SPARE_OPTION_SETS``, least recent first), each
    with its ``prepare``; shared by the pools of every browser, so a relaunch opens them again."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[dict[str, Any], Prepare[Any]]] = {}

    def remember(self, key: str, options: Mapping[str, Any], prepare: Prepare[Any]) -> None:
        """Keep ``key``'s options and ``prepare`` as the most recent set."""
        known = self._sets.pop(key, None)
        self._sets[key] = known or (dict(options), prepare)
        while len(self._sets) > SPARE_OPTION_SETS:
            self._sets.pop(next(iter(self._sets)))

    def get(self, key: str) -> tuple[dict[str, Any], Prepare[Any]] | None:
        return self._sets.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._sets))

    def clear(self) -> None:
        self._sets.clear()
