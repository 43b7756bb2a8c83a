"""Dashboard lookup: a dashboard's slug and titles from Grafana's HTTP API, cached per uid.

The slug makes the page URL the one Grafana itself links to; the titles give a picture its
``alt`` when the config names none. A failed lookup is never a failed capture: the page is
loaded without the slug (only an HTTP 404 from the API means the dashboard does not exist).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sidecar.capture.auth import auth_header
from sidecar.capture.urls import dashboard_api_url
from sidecar.config import GrafanaConfig

__all__ = ["DashboardDirectory", "DashboardInfo", "Lookup"]

_PANEL_KEY = re.compile(r"(?:panel-)?(\d+)(?:-clone-\d+)?")


@dataclass(frozen=True)
class DashboardInfo:
    """What ``/api/dashboards/uid/<uid>`` tells a capture: the slug and the titles."""

    uid: str
    title: str
    slug: str
    panels: Mapping[int, str] = field(default_factory=dict)

    def title_for(self, panel: str | None) -> str:
        """The panel's title (``4``, ``panel-4`` and ``panel-4-clone-1`` all mean id 4)."""
        if panel is None:
            return self.title
        m = _PANEL_KEY.fullmatch(panel)
        return self.panels.get(int(m.group(1)), "") if m else ""

    @classmethod
    def from_api(cls, uid: str, payload: Any) -> DashboardInfo:
        dash = payload.get("dashboard") if isinstance(payload, dict) else None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        if not isinstance(dash, dict):
            raise ValueError("no dashboard object")
        titles: dict[int, str] = {}
        _collect_titles(dash.get("panels"), titles)
        slug = meta.get("slug") if isinstance(meta, dict) else None
        return cls(uid=uid, title=str(dash.get("title") or ""), slug=str(slug or ""), panels=titles)


def _collect_titles(panels: Any, out: dict[int, str]) -> None:
    """Panels and the panels nested in collapsed rows."""
    if not isinstance(panels, list):
        return
    for p in panels:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("id"), int) and not isinstance(p.get("id"), bool):
            out[p["id"]] = str(p.get("title") or "")
        _collect_titles(p.get("panels"), out)


@dataclass(frozen=True)
class Lookup:
    """Result of a dashboard lookup: ``info`` when found, else the HTTP ``status`` (0: no answer)."""

    info: DashboardInfo | None
    status: int


class DashboardDirectory:
    """Looks dashboards up once per uid (cached for ``ttl``) with the capture's credentials."""

    def __init__(self, *, grafana: GrafanaConfig, clock: Callable[[], float], ttl: float = 600.0) -> None:
        self._cfg = grafana
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DashboardInfo]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    def cached(self, uid: str) -> DashboardInfo | None:
        hit = self._cache.get(uid)
        if hit is None or hit[0] < self._clock():
            return None
        return hit[1]

    async def lookup(self, uid: str, *, timeout: float) -> Lookup:
        """``GET /api/dashboards/uid/<uid>``; failures give ``info`` None and never raise."""
        info = self.cached(uid)
        if info is not None:
            return Lookup(info, 200)
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            info = self.cached(uid)
            if info is not None:
                return Lookup(info, 200)
            result = await self._fetch(uid, timeout)
            if result.info is not None:
                self._cache[uid] = (self._clock() + self._ttl, result.info)
            return result

    async def _fetch(self, uid: str, timeout: float) -> Lookup:
        if self._session is None:
            headers = {"Accept": "application/json", "X-Grafana-Org-Id": str(self._cfg.org_id)}
            auth = auth_header(self._cfg)
            if auth:
                headers["Authorization"] = auth
            self._session = aiohttp.ClientSession(headers=headers)
        try:
            async with self._session.get(
                dashboard_api_url(self._cfg, uid),
                timeout=aiohttp.ClientTimeout(total=max(timeout, 0.1)),
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    return Lookup(None, resp.status)
                return Lookup(DashboardInfo.from_api(uid, await resp.json(content_type=None)), 200)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return Lookup(None, 0)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
