"""Dashboard lookup: a dashboard's slug and titles from Grafana's HTTP API, cached per org and uid.

The slug makes the page URL the one Grafana itself links to; the titles give a picture its
``alt`` when the config names none. A failed lookup is never a failed capture: the page is
loaded without the slug (only an HTTP 404 from the API means the dashboard does not exist).
A v2-schema dashboard (Grafana 12.1+) is refused by ``/api/dashboards/uid/<uid>`` with 406: it
is read through the app platform API (``/apis/dashboard.grafana.app/v2beta1``, else
``v2alpha1``), whose ``spec`` has the title and the panels (``elements``) but no slug: the slug
is made from the title as Grafana does. A failed lookup is remembered for ``failure_ttl`` so it is
not repeated on every capture.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sidecar.capture.auth import auth_header
from sidecar.capture.urls import dashboard_api_url, dashboard_v2_url
from sidecar.config import GrafanaConfig

__all__ = ["DashboardDirectory", "DashboardInfo", "Lookup"]

_PANEL_KEY = re.compile(r"(?:panel-)?(\d+)(?:-clone-\d+)?")
_V2_VERSIONS = ("v2beta1", "v2alpha1")  # 12.2+, then 12.0/12.1


def slugify(title: str) -> str:
    """Grafana's slug of a title (grafana/grafana pkg/infra/slugify/slugify.go, for the common
    case): lower case, runs of anything but letters and digits become one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


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

    @classmethod
    def from_v2(cls, uid: str, payload: Any) -> DashboardInfo:
        """A v2 resource: ``spec.title`` and ``spec.elements`` (``{"panel-1": {"kind": "Panel",
        "spec": {"id": 1, "title": ...}}}``), follows grafana/grafana
        apps/dashboard/pkg/apis/dashboard/v2beta1 (types.spec.gen.go)."""
        spec = payload.get("spec") if isinstance(payload, dict) else None
        if not isinstance(spec, dict):
            raise ValueError("no spec")
        titles: dict[int, str] = {}
        elements = spec.get("elements")
        for element in (elements or {}).values() if isinstance(elements, dict) else ():
            inner = element.get("spec") if isinstance(element, dict) else None
            if isinstance(inner, dict) and isinstance(inner.get("id"), int) and not isinstance(inner.get("id"), bool):
                titles[inner["id"]] = str(inner.get("title") or "")
        title = str(spec.get("title") or "")
        return cls(uid=uid, title=title, slug=slugify(title), panels=titles)


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
    """Looks dashboards up once per (org, uid) (cached for ``ttl``; failures for ``failure_ttl``)
    with the capture's credentials."""

    def __init__(
        self, *, grafana: GrafanaConfig, clock: Callable[[], float], ttl: float = 600.0, failure_ttl: float = 30.0
    ) -> None:
        self._cfg = grafana
        self._clock = clock
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self._cache: dict[tuple[int, str], tuple[float, Lookup]] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    def _key(self, uid: str, org_id: int | None) -> tuple[int, str]:
        return (org_id or self._cfg.org_id, uid)

    def cached(self, uid: str, org_id: int | None = None) -> DashboardInfo | None:
        hit = self._recent(self._key(uid, org_id))
        return hit.info if hit is not None else None

    def _recent(self, key: tuple[int, str]) -> Lookup | None:
        hit = self._cache.get(key)
        if hit is None or hit[0] < self._clock():
            return None
        return hit[1]

    async def lookup(
        self, uid: str, *, timeout: float, org_id: int | None = None, base_url: str | None = None
    ) -> Lookup:
        """``GET /api/dashboards/uid/<uid>`` (a 406: the v2 API); failures give ``info`` None and
        never raise. ``base_url``: where Grafana answers (default ``grafana.url``)."""
        key = self._key(uid, org_id)
        hit = self._recent(key)
        if hit is not None:
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._recent(key)
            if hit is not None:
                return hit
            result = await self._fetch(uid, key[0], base_url or str(self._cfg.url), timeout)
            ttl = self._ttl if result.info is not None else self._failure_ttl
            self._cache[key] = (self._clock() + ttl, result)
            return result

    async def _fetch(self, uid: str, org_id: int, base_url: str, timeout: float) -> Lookup:
        if self._session is None:
            headers = {"Accept": "application/json"}
            auth = auth_header(self._cfg)
            if auth:
                headers["Authorization"] = auth
            self._session = aiohttp.ClientSession(headers=headers)
        deadline = self._clock() + max(timeout, 0.1)
        status, body = await self._get(dashboard_api_url(base_url, uid), org_id, deadline)
        if status == 200:
            return self._parse(DashboardInfo.from_api, uid, body)
        if status != 406:
            return Lookup(None, status)
        for version in _V2_VERSIONS:  # a v2-schema dashboard
            status, body = await self._get(dashboard_v2_url(base_url, uid, org_id, version), org_id, deadline)
            if status == 200:
                return self._parse(DashboardInfo.from_v2, uid, body)
            if status != 404:
                break
        return Lookup(None, status)

    @staticmethod
    def _parse(parse: Callable[[str, Any], DashboardInfo], uid: str, body: Any) -> Lookup:
        try:
            return Lookup(parse(uid, body), 200)
        except ValueError:
            return Lookup(None, 0)

    async def _get(self, url: str, org_id: int, deadline: float) -> tuple[int, Any]:
        assert self._session is not None
        remaining = max(deadline - self._clock(), 0.1)
        try:
            async with self._session.get(
                url,
                headers={"X-Grafana-Org-Id": str(org_id)},
                timeout=aiohttp.ClientTimeout(total=remaining),
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    return resp.status, None
                return 200, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
