"""A local Flashduty-compatible server, for ``demo``, tests and benchmarks.

It emulates the parts of Flashduty the sidecar uses, as docs/flashduty-api.md describes them:

- ``POST /push/image/upload?integration_key=`` (multipart file field ``image``)
- ``POST /event/push/alert/standard?integration_key=`` (Standard Alert push)
- ``POST /alert/list?app_key=`` (Open API alert list)

with the shared envelope, ``Flashcat-Request-Id``, the documented validation, exact sliding-
window rate limits (upload 5/s and 50/min per account; push 100/s and 1000/min per
integration; list 50/s and 1000/min per account), and alert merging by ``alert_key``. All
integration keys belong to one account.

This module is the sandbox's state and its Python API for in-process tests (seed pushes, inject
faults, read ``state()``); ``flashduty_routes`` is the aiohttp application over it (routes, order
of checks, the deliberate choices where the doc is silent), and the helper modules hold the rest
(``flashduty_alerts`` merging, ``flashduty_events`` push validation, ``flashduty_images``,
``flashduty_limits``, ``flashduty_query``, ``flashduty_faults``, ``flashduty_page``).

``time_scale`` divides the rate-limit windows and keeps the counts: ``time_scale=10`` makes the
1 s window 0.1 s and the 1 min window 6 s ("every limit ×10"). ``clock`` (monotonic seconds)
drives the limiter and ``wall`` (Unix seconds) the alert times; inject fakes for determinism.

Key values never appear in a response, in the state or in a log line: serve the app with
``RedactingAccessLogger`` (``serve`` does).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .flashduty_alerts import Alert, AlertBook, Integration, PushOutcome
from .flashduty_events import parse_push
from .flashduty_faults import ENDPOINTS, Fault, FaultSet, parse_fault
from .flashduty_http import RedactingAccessLogger
from .flashduty_images import ImageStore
from .flashduty_limits import Limit, RateLimiter
from .flashduty_page import render_page
from .flashduty_routes import build_app

__all__ = ["Fault", "FlashdutySandbox", "RedactingAccessLogger"]


@dataclass
class EndpointStats:
    requests: int = 0
    processed: int = 0
    rate_limited: int = 0
    faulted: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "processed": self.processed,
            "rate_limited": self.rate_limited,
            "faulted": self.faulted,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
        }


class FlashdutySandbox:
    """The sandbox's state and its aiohttp application (``make_app``)."""

    ACCOUNT_ID = 2451002751131
    CHANNEL_ID = 2551105804131
    CHANNEL_NAME = "Sandbox channel"
    FIRST_INTEGRATION_ID = 3651002751001

    def __init__(
        self,
        *,
        integration_keys: Iterable[str] = ("sandbox-integration-key",),
        app_keys: Iterable[str] = ("sandbox-app-key",),
        upload_per_second: int = 5,
        upload_per_minute: int = 50,
        push_per_second: int = 100,
        push_per_minute: int = 1000,
        list_per_second: int = 50,
        list_per_minute: int = 1000,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        keys = list(dict.fromkeys(integration_keys))
        if not keys or not all(keys):
            raise ValueError("integration_keys must hold at least one non-empty key")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0 (got {time_scale})")
        self.time_scale = time_scale
        self._clock = clock
        self.wall = wall
        self._app_keys = frozenset(key for key in app_keys if key)
        self._integrations = {key: self._integration_for(index) for index, key in enumerate(keys)}
        self._limits = {
            "upload": Limit(upload_per_second, upload_per_minute),
            "push": Limit(push_per_second, push_per_minute),
            "list": Limit(list_per_second, list_per_minute),
        }
        self.faults = FaultSet()
        self.reset()

    def _integration_for(self, index: int) -> Integration:
        return Integration(
            integration_id=self.FIRST_INTEGRATION_ID + index,
            integration_name=f"Sandbox standard alert {index + 1}",
            channel_id=self.CHANNEL_ID,
            channel_name=self.CHANNEL_NAME,
            account_id=self.ACCOUNT_ID,
        )

    # ---- Python API for in-process tests -------------------------------------------------

    def reset(self) -> None:
        """Forget alerts, images, counters, limiter windows and faults."""
        self.images = ImageStore()
        self.book = AlertBook(wall=self.wall)
        self.limiters = {
            name: RateLimiter(limit, time_scale=self.time_scale, clock=self._clock)
            for name, limit in self._limits.items()
        }
        self.stats = {name: EndpointStats() for name in ENDPOINTS}
        # every API request as a gateway's access log has it: (wall time, endpoint, User-Agent, status)
        self.access_log: list[tuple[float, str, str, int]] = []
        self.warnings: list[str] = []
        self.faults.clear()

    @property
    def alerts(self) -> list[Alert]:
        return list(self.book.alerts)

    def integration_id(self, integration_key: str) -> int:
        return self._integrations[integration_key].integration_id

    def add_fault(self, kind: str, **spec: Any) -> Fault:
        """Same keys as ``POST /_sandbox/faults``, e.g. ``add_fault("status", endpoint="push",
        status=500, count=3)``; raises ``FaultSpecError`` (a ValueError) on a bad spec."""
        return self.faults.add(parse_fault({"kind": kind, **spec}))

    def clear_faults(self) -> None:
        self.faults.clear()

    def push_event(self, body: dict[str, Any], *, integration_key: str | None = None) -> PushOutcome:
        """Ingest a push body in-process (no HTTP, no rate limit, no faults), e.g. to seed state.

        Raises ``ApiError`` exactly where the HTTP endpoint would answer 400."""
        integration = self._integrations[integration_key or next(iter(self._integrations))]
        return self.ingest(integration, copy.deepcopy(body))

    def ingest(self, integration: Integration, body: dict[str, Any]) -> PushOutcome:
        """Validate and apply one push body (``ApiError`` where the endpoint answers 400)."""
        event = parse_push(body, is_known_image=self.images.__contains__)
        outcome = self.book.apply(integration, event, body)
        self.warnings.extend(f"push {outcome.alert_key}: {warning}" for warning in event.warnings)
        if outcome.alert is not None:
            for image in event.images:
                self.images.mark_referenced(image.src)
        return outcome

    def integration_for_key(self, integration_key: str) -> Integration | None:
        return self._integrations.get(integration_key)

    def is_app_key(self, app_key: str) -> bool:
        return app_key in self._app_keys

    def state(self) -> dict[str, Any]:
        """Everything a test may assert on (``GET /_sandbox/state``); JSON-serialisable."""
        return {
            "time_scale": self.time_scale,
            "account_id": self.ACCOUNT_ID,
            "integrations": [integration.to_json() for integration in self._integrations.values()],
            "alerts": [alert.to_state() for alert in self.book.alerts],
            "images": self.images.snapshot(),
            "uploads": self.stats["upload"].processed,
            "pushes": self.stats["push"].processed,
            "lists": self.stats["list"].processed,
            "http_429": {name: stats.statuses[429] for name, stats in self.stats.items()},
            "endpoints": {name: stats.to_json() for name, stats in self.stats.items()},
            "discarded_events": list(self.book.discarded),
            "warnings": list(self.warnings),
            "limits": {name: limiter.snapshot() for name, limiter in self.limiters.items()},
            "faults": [fault.to_json() for fault in self.faults.active()],
        }

    def render_html(self, **kwargs: Any) -> str:
        """The ``GET /`` page; kwargs go to ``flashduty_page.render_page`` (e.g. ``image_url``)."""
        return render_page(self.book.alerts, stats=self._page_stats(), **kwargs)

    def _page_stats(self) -> Mapping[str, Any]:
        return {
            "uploads": self.stats["upload"].processed,
            "images": len(self.images),
            "pushes": self.stats["push"].processed,
            "discarded": len(self.book.discarded),
            "429s": sum(stats.statuses[429] for stats in self.stats.values()),
        }

    # ---- the aiohttp application ---------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application serving this sandbox (``flashduty_routes``)."""
        return build_app(self)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run the app on ``host:port`` (0: a free port) and yield its base URL."""
        runner = web.AppRunner(self.make_app(), access_log_class=RedactingAccessLogger)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            yield f"http://{bound_host}:{bound_port}"
        finally:
            await runner.cleanup()
