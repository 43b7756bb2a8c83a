"""The picture cache: a usable capture result is reused for ``capture.cache_ttl``.

Only pictures are cached (``ok``, ``no_data``, ``panel_error``), never failures: a timeout or a
login page is retried by the next capture. The cache is bounded in entries (``_CACHE_MAX``) and
in bytes (``_CACHE_MAX_BYTES``: pictures can be MBs each — whole dashboards, scale 2), oldest
out first; the newest entry is always kept. Expired entries go whenever one is added.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sidecar.capture.errors import CaptureClass
from sidecar.capture.result import CaptureResult

__all__ = ["CACHEABLE", "PictureCache"]

CACHEABLE = frozenset({CaptureClass.OK, CaptureClass.NO_DATA, CaptureClass.PANEL_ERROR})
_CACHE_MAX = 128
_CACHE_MAX_BYTES = 64 * 1024 * 1024  # pictures can be MBs each (whole dashboards, scale 2)


class PictureCache:
    """Results by ``PanelCapture.cache_key()``, each with its expiry on ``clock`` (LRU order)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CaptureResult]] = OrderedDict()

    def get(self, key: str) -> CaptureResult | None:
        """The result cached for ``key`` if it has not expired."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        return None

    def put(self, key: str, result: CaptureResult, ttl: float) -> None:
        """Keep ``result`` for ``ttl`` seconds if it is a picture (``ttl`` 0: not at all)."""
        if result.cls in CACHEABLE and ttl > 0:
            self._entries[key] = (self._clock() + ttl, result)
            self._entries.move_to_end(key)
            self._prune()

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self) -> None:
        now = self._clock()
        for k in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[k]
        while len(self._entries) > _CACHE_MAX:
            self._entries.popitem(last=False)
        size = sum(len(r.image or b"") for _, r in self._entries.values())
        while size > _CACHE_MAX_BYTES and len(self._entries) > 1:
            _, (_, oldest) = self._entries.popitem(last=False)
            size -= len(oldest.image or b"")
