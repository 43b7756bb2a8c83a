"""Which Grafana the sidecar talks to: its version, where it answers, and its ``appSubUrl``.

``GrafanaProbe.current()`` reads ``GET <grafana.url>/api/health`` (open, no credentials; its
``version``) and Grafana's login page (open; ``<base href="<appSubUrl>/">``, as Grafana's
``public/views/index.html`` writes it), once, then again after ``ttl`` or after ``forget()``
(a capture that could not reach Grafana: it may have been upgraded meanwhile). What it finds
is logged once per change.

Sub paths (``root_url = https://host/grafana/``), with ``grafana.url`` at the pod-local Grafana:

* ``serve_from_sub_path = true``: Grafana answers under ``/grafana`` only; ``grafana.url`` must
  say ``http://localhost:3000/grafana`` (``appSubUrl`` then matches the URL's path);
* ``serve_from_sub_path = false`` (a proxy strips the prefix): Grafana answers at ``/`` but its
  pages load scripts and call the API under ``/grafana``. ``grafana.url`` may be
  ``http://localhost:3000`` or ``http://localhost:3000/grafana`` (answered 404: the probe falls
  back to the origin); ``rewrite`` then maps the page's ``/grafana/...`` requests to ``/...``.

Version-dependent behaviour (``GrafanaInfo``): before 11.2 ``/d-solo/`` is the legacy page
(``parseInt(panelId)``: ``panel-4`` must be sent as ``4``, repeat clones cannot be captured);
from 12.4 the solo page shows a "Powered by Grafana" badge unless ``hideLogo=true``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from sidecar.capture.urls import base_path

__all__ = ["GrafanaInfo", "GrafanaProbe", "parse_version"]

log = logging.getLogger("sidecar.capture")

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
_BASE_HREF = re.compile(r"""<base\s+href=["']([^"']*)["']""", re.IGNORECASE)
_PANEL_KEY = re.compile(r"panel-(\d+)(-clone-\d+)?")
_SUB_URL = re.compile(r""""appSubUrl"\s*:\s*"([^"]*)\"""")
_APP_URL = re.compile(r""""appUrl"\s*:\s*"((?:[^"\\]|\\.)*)\"""")


def _not_here(status: int) -> bool:
    """``/api/health`` is not Grafana's API at this path (it is not a page that wants a login)."""
    return status == 404 or 300 <= status < 400


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"11.2.3"``, ``"12.4.0-123456"``, ``"v10.4.1"`` → ``(major, minor, patch)``; None when unknown."""
    m = _VERSION.match(text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


@dataclass(frozen=True)
class GrafanaInfo:
    """What was detected. ``serve_url``: where Grafana answers (``grafana.url``, or its origin
    when Grafana answered 404 under the sub path); ``app_sub_url``: the path its pages use."""

    serve_url: str
    app_sub_url: str = ""
    version_text: str = ""
    app_url: str = ""  # root_url as Grafana reports it (boot data ``appUrl``): where people open it

    def public_link(self, url: str) -> str:
        """``url`` (a link under ``serve_url``, as the sidecar reaches Grafana from the pod) under
        Grafana's ``appUrl``, the address people open: the link a picture carries in the alert."""
        app = self.app_url.rstrip("/")
        if not app.startswith(("http://", "https://")) or not url.startswith(self.serve_url):
            return url
        rest = url[len(self.serve_url) :]
        if self.app_sub_url and rest.startswith(self.app_sub_url + "/"):  # the page's own prefix
            rest = rest[len(self.app_sub_url) :]
        if rest and rest[0] not in "/?":  # another port or path that only starts the same
            return url
        return app + rest

    @property
    def version(self) -> tuple[int, int, int] | None:
        return parse_version(self.version_text)

    def at_least(self, major: int, minor: int) -> bool:
        """True when the version is known and ≥ ``major.minor``; unknown versions count as new."""
        v = self.version
        return v is None or v[:2] >= (major, minor)

    @property
    def scenes_solo(self) -> bool:
        """``/d-solo/`` is Scenes' solo page: the ``dashboardSceneSolo`` toggle, on by default
        from 11.2 (grafana/grafana ``pkg/services/featuremgmt/registry.go``)."""
        return self.at_least(11, 2)

    @property
    def solo_logo(self) -> bool:
        """12.4's solo page draws "Powered by Grafana" unless the URL says ``hideLogo=true``."""
        return self.at_least(12, 4)

    @property
    def rewrite(self) -> tuple[str, str] | None:
        """``(from, to)`` URL prefixes for the page's requests when its ``appSubUrl`` is not
        where Grafana answers (``serve_from_sub_path = false`` behind a prefix-stripping proxy)."""
        served = base_path(self.serve_url)
        if not self.app_sub_url or self.app_sub_url == served:
            return None
        parts = urlsplit(self.serve_url)
        here = f"{parts.scheme}://{parts.netloc}"
        return here + self.app_sub_url + "/", here + served + "/"

    def panel_param(self, panel: str) -> str:
        """``panelId`` for ``panel`` on this version: Scenes takes ``4``, ``panel-4`` and repeat clones
        ``panel-4-clone-1`` (``useSoloPanel.ts``); the legacy page does ``parseInt``, so ``panel-4``
        becomes ``4`` there. ``ValueError`` (one sentence) for a reference that cannot work."""
        if self.scenes_solo:
            return panel
        m = _PANEL_KEY.fullmatch(panel)
        if m is None:
            return panel
        if m.group(2):
            raise ValueError(
                f"panel {panel} is a repeated-panel clone, which Grafana {self.version_text} cannot show on its own"
                " (clones need Scenes' solo page, Grafana 11.2+): name the repeated panel (panel: "
                f"{m.group(1)}) or a fixed variable value"
            )
        return m.group(1)

    def describe(self) -> str:
        version = self.version_text or "unknown version"
        sub = f", appSubUrl {self.app_sub_url}" if self.app_sub_url else ""
        rewrite = self.rewrite
        how = f"; its pages' {rewrite[0]} requests go to {rewrite[1]}" if rewrite else ""
        public = f", links to {self.app_url}" if self.app_url else ""
        return f"Grafana {version} at {self.serve_url}{sub}{public}{how}"


class GrafanaProbe:
    """Detects ``GrafanaInfo`` for ``grafana_url`` and keeps it for ``ttl`` seconds."""

    def __init__(self, grafana_url: str, *, clock: Callable[[], float], ttl: float = 300.0) -> None:
        self._url = grafana_url.rstrip("/")
        self._clock = clock
        self._ttl = ttl
        self._info: GrafanaInfo | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self._logged: GrafanaInfo | None = None
        self.failure = ""  # why the last detection found nothing (safe words), for the capture's detail
        self.no_grafana = ""  # set when grafana.url answers but no /api/health is there: not Grafana's path

    def cached(self) -> GrafanaInfo | None:
        return self._info

    def forget(self) -> None:
        """Detect again before the next capture (Grafana was unreachable: it may come back upgraded)."""
        self._expires = 0.0

    async def current(self, *, timeout: float) -> GrafanaInfo:
        """The info, detected when missing or stale. Never raises: without answers, ``grafana.url``
        is used as is with an unknown version (captures then run as on the newest Grafana)."""
        if self._info is not None and self._clock() < self._expires:
            return self._info
        async with self._lock:
            if self._info is not None and self._clock() < self._expires:
                return self._info
            info = await self._detect(timeout)
            if info is None:
                info = self._info or GrafanaInfo(serve_url=self._url)
                self._expires = self._clock() + min(self._ttl, 10.0)  # retry soon
            else:
                self._expires = self._clock() + self._ttl
                self.failure = ""
            self._info = info
            if info != self._logged and info.version_text:
                log.info("detected %s", info.describe())
                self._logged = info
            return info

    async def _detect(self, timeout: float) -> GrafanaInfo | None:
        client_timeout = aiohttp.ClientTimeout(total=max(timeout, 0.1))
        self.no_grafana = ""
        try:
            async with aiohttp.ClientSession(timeout=client_timeout) as session:
                serve_url, status, version = self._url, *await self._health(session, self._url)
                if _not_here(status) and base_path(self._url):
                    # Grafana does not serve from the sub path: it answers at the origin (under the
                    # prefix, its catch-all page route answers 404 or a redirect to the login page)
                    serve_url, (status, version) = self._origin_url(), await self._health(session, self._origin_url())
                if _not_here(status):
                    self.failure = self.no_grafana = f"no Grafana /api/health under {self._url}"
                    return None
                if status != 200:  # a proxy in front that wants credentials, Grafana starting: unknown version
                    self.failure = f"Grafana answered HTTP {status} on /api/health"
                    return None  # grafana.url as is, asked again soon
                sub, app_url = await self._boot_settings(session, serve_url)
                return GrafanaInfo(serve_url=serve_url, app_sub_url=sub, version_text=version, app_url=app_url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            self.failure = f"cannot reach Grafana ({type(e).__name__})"
            return None

    def _origin_url(self) -> str:
        parts = urlsplit(self._url)
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))

    @staticmethod
    async def _health(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
        """``(status, version)`` of ``<url>/api/health`` (version ``""`` when the body is not Grafana's)."""
        async with session.get(url + "/api/health", allow_redirects=False) as resp:
            if resp.status != 200:
                return resp.status, ""
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                return 200, ""
        version = body.get("version") if isinstance(body, dict) else None
        return 200, str(version or "")

    @staticmethod
    async def _boot_settings(session: aiohttp.ClientSession, serve_url: str) -> tuple[str, str]:
        """``(appSubUrl, appUrl)`` from the login page: ``<base href>`` (index.html), else the boot
        data's ``appSubUrl``; ``appUrl`` from the boot data (``grafanaBootData.settings``, a
        ``FrontendSettingsDTO``: grafana/grafana ``pkg/api/dtos/frontend_settings.go``), "" without."""
        async with session.get(serve_url + "/login", allow_redirects=False) as resp:
            if resp.status != 200:
                return base_path(serve_url), ""
            text = (await resp.content.read(256 * 1024)).decode("utf-8", "replace")
        app_url = ""
        if (u := _APP_URL.search(text)) is not None:
            try:
                app_url = str(json.loads(f'"{u.group(1)}"'))  # a JSON string (``\/`` and ``\u`` escapes)
            except ValueError:
                app_url = ""
        m = _BASE_HREF.search(text) or _SUB_URL.search(text)
        if m is None:
            return base_path(serve_url), app_url
        href = m.group(1)
        return (urlsplit(href).path.rstrip("/") if "://" in href else href.rstrip("/")), app_url
