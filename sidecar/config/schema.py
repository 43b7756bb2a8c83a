"""The config schema: the top-level ``Config`` and the service sections (``flashduty``, ``grafana``,
``capture``, ``server``, ``delivery``, ``datasources``, ``log``).

The rule-side sections (``rules``, ``rule_files``, ``webhook`` and their panels) are in
``rule_schema``. Field docstrings are the reference text of ``docs/configuration.md``
(``python -m sidecar.configdoc``); defaults and bounds here are the only ones.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from sidecar.config.ha_schema import HaConfig
from sidecar.config.rule_schema import RuleConfig, RuleFileConfig, WebhookConfig
from sidecar.config.status_schema import StatusConfig
from sidecar.config.values import Duration, HttpUrl, ImageFormat, StrictModel, Theme, check_timezone

__all__ = [
    "BasicAuth",
    "CaptureConfig",
    "Config",
    "DatasourceConfig",
    "DeliveryConfig",
    "FlashdutyConfig",
    "GrafanaConfig",
    "LogConfig",
    "RateLimit",
    "ServerConfig",
]


class RateLimit(StrictModel):
    per_second: int = Field(gt=0)
    """Requests allowed in any rolling second."""
    per_minute: int = Field(gt=0)
    """Requests allowed in any rolling minute."""


class FlashdutyConfig(StrictModel):
    api_host: HttpUrl = "https://api.flashcat.cloud"
    """Flashduty API base URL."""
    integration_key: SecretStr
    """Standard Alert integration key, for image upload and alert push. Secret: `${VAR}` only."""
    app_key: SecretStr | None = None
    """APP key for `/alert/list` (startup reconcile and the `alerts` command). Optional. Secret."""
    timeout: Duration = 10.0
    """Timeout of one HTTP request to Flashduty."""
    upload_rate: RateLimit = RateLimit(per_second=5, per_minute=50)
    """Image upload limit, per account (Flashduty documents 5/s and 50/min)."""
    push_rate: RateLimit = RateLimit(per_second=100, per_minute=1000)
    """Alert push limit, per integration (Flashduty documents 100/s and 1000/min)."""

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class BasicAuth(StrictModel):
    username: str = Field(min_length=1)
    """User name."""
    password: SecretStr
    """Password. Secret: `${VAR}` only."""


class GrafanaConfig(StrictModel):
    url: HttpUrl = "http://localhost:3000"
    """Grafana base URL as the sidecar reaches it (in a pod: `http://localhost:3000`; with `serve_from_sub_path`, plus the sub path). Its version, `appSubUrl` and public address (`root_url`, used for the pictures' links) are detected."""
    org_id: int = Field(default=1, ge=1)
    """Grafana organisation of the dashboards (a webhook alert that names its org, `orgId`, is captured in that one)."""
    token: SecretStr | None = None
    """Service-account token (Viewer is enough). Sent only to requests for this origin. Secret."""
    basic_auth: BasicAuth | None = None
    """Basic auth instead of a token: `{username, password}`."""
    theme: Theme = "dark"
    """Theme of the pictures: `dark` or `light`."""
    timezone: str = "UTC"
    """IANA time zone of the pictures' time axis (URL `timezone=` and the browser), and of `cron` schedules."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)

    @model_validator(mode="after")
    def _one_auth(self) -> GrafanaConfig:
        if self.token is not None and self.basic_auth is not None:
            raise ValueError("set either token or basic_auth, not both")
        return self


class CaptureConfig(StrictModel):
    browser_path: str = ""
    """Chromium executable; empty: `$SIDECAR_BROWSER_PATH` when set (the container image sets it), else Debian's `chromium-headless-shell` where installed, else `chromium` (or `chromium-browser`, `google-chrome`) on PATH, else Playwright's own browser."""
    concurrency: int = Field(default=2, ge=1, le=16)
    """Captures running at once (one warm browser, one context each)."""
    timeout: Duration = 20.0
    """Longest one capture may take, navigation to pixels; then it is classified `timeout`."""
    image_budget: Duration = 15.0
    """Longest an alert waits for its pictures; missing ones follow in an update event."""
    width: int = Field(default=1000, ge=100, le=3000)
    """Viewport width in CSS pixels."""
    height: int = Field(default=500, ge=100, le=3000)
    """Viewport height in CSS pixels."""
    scale: float = Field(default=1.0, ge=0.5, le=4.0)
    """Device scale factor (2 gives sharper pictures on phones)."""
    format: ImageFormat = "png"
    """Picture format: `png`, `jpeg` or `webp`; always kept under Flashduty's 5 MB."""
    quality: int = Field(default=85, ge=10, le=100)
    """Starting quality for jpeg/webp (lowered only to fit 5 MB)."""
    cache_ttl: Duration = 60.0
    """Identical captures (same panel, window, vars, size, theme) within this time share one picture."""
    context_reuse: int = Field(default=25, ge=1, le=1000)
    """Captures one browser context (its cookies, cache and page) serves before it is closed; 1 = a fresh context for every capture. Reused only for the same scale, theme and time zone, and only after a capture that ended cleanly; in between, the page goes to `about:blank`."""
    recycle_after: int = Field(default=500, ge=1)
    """Relaunch the browser after this many captures."""
    max_browser_rss_mb: int = Field(default=1024, ge=64)
    """Relaunch the browser when all its processes together use more memory than this."""
    liveness_grace: Duration = Field(default=120.0, gt=0)
    """How long the browser may stay impossible to launch before `/healthz` fails (Kubernetes then restarts the sidecar container, never Grafana's)."""

    @field_validator("timeout", "image_budget")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class ServerConfig(StrictModel):
    listen: str = "0.0.0.0:9464"
    """Address of `/healthz`, `/readyz`, `/metrics`, `/webhook/alertmanager` and the Alertmanager API (`/api/v2/alerts`, `/api/v2/status`)."""
    webhook_token: SecretStr | None = None
    """When set, `POST /webhook/alertmanager` and `/api/v2/*` need `Authorization: Bearer <token>`, or basic auth with the token as password (any user name). Required with `ha.mode: kubernetes`: it also guards `POST /ha/events`, where replicas forward alerts to the leader. Secret."""
    webhook_max_body: int = Field(default=1024 * 1024, ge=1024)
    """Largest body accepted on `/webhook/alertmanager` and `/api/v2/alerts`, in bytes (larger: 413)."""
    shutdown_grace: Duration = 20.0
    """On SIGTERM, how long in-flight deliveries may finish; the rest stays in the outbox."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port (got {v!r})")
        h = host.strip("[]")
        if h and h != "localhost":
            try:
                ipaddress.ip_address(h)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9.-]+", h):
                    raise ValueError(f"invalid host in {v!r}") from None
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DeliveryConfig(StrictModel):
    max_attempts: int = Field(default=10, ge=1)
    """Attempts per event before the dead-letter table (429 answers do not count)."""
    resend_interval: Duration = 300.0
    """Re-send still-firing alerts this often (mind Flashduty's push budget)."""
    recapture_on_resend: bool = False
    """Take fresh pictures on re-sends too."""
    image_cache_ttl: Duration = 86400.0
    """How long an uploaded picture's `image_key` is reused for identical bytes."""
    workers: int = Field(default=4, ge=1, le=64)
    """Pushes to Flashduty at once (`Ok` events first). Captures and uploads of many events run together regardless, bounded by `capture.concurrency` and the upload rate limit."""
    shared_pictures: bool = True
    """Storms: when one rule fires for many instances at once and the upload rate limit cannot give each its own picture within `capture.image_budget`, every alert's first push carries one shared picture of the rule's panel (captured once without the variables that differ between the instances, uploaded once); each alert's own picture follows as an update, most severe first."""


class DatasourceConfig(StrictModel):
    name: str = Field(min_length=1)
    """Name that rules refer to."""
    type: Literal["prometheus"] = "prometheus"
    """Only `prometheus` (any Prometheus-compatible `/api/v1/query`)."""
    url: HttpUrl
    """Base URL; `/api/v1/query` is appended."""
    timeout: Duration = 10.0
    """Query timeout."""
    bearer_token: SecretStr | None = None
    """Bearer token for the datasource. Secret."""
    basic_auth: BasicAuth | None = None
    """Basic auth for the datasource: `{username, password}`."""


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug`, `info`, `warning` or `error`."""
    format: Literal["auto", "json", "text"] = "auto"
    """`json`, `text`, or `auto` (JSON unless stdout is a terminal)."""


class Config(StrictModel):
    flashduty: FlashdutyConfig
    """Flashduty API and keys."""
    grafana: GrafanaConfig = GrafanaConfig()
    """The Grafana whose panels are captured."""
    capture: CaptureConfig = CaptureConfig()
    """Headless Chromium captures."""
    server: ServerConfig = ServerConfig()
    """The sidecar's own HTTP server."""
    delivery: DeliveryConfig = DeliveryConfig()
    """Outbox and re-sends."""
    log: LogConfig = LogConfig()
    """Logging."""
    status: StatusConfig = StatusConfig()
    """The status page (`GET /`): access, and the deliveries and pictures it keeps."""
    state_dir: str = "/var/lib/flashduty-sidecar"
    """Directory of the SQLite outbox, rule state and image-key cache (emptyDir or PVC)."""
    datasources: list[DatasourceConfig] = Field(default_factory=list)
    """Prometheus-compatible datasources for prometheus rules."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """Alert rules and scheduled reports."""
    rule_files: list[RuleFileConfig] = Field(default_factory=list)
    """Prometheus rule files to load as prometheus rules (strings or `{path, datasource}`)."""
    webhook: WebhookConfig = WebhookConfig()
    """Alerts received on `POST /webhook/alertmanager` and on the Alertmanager API (`POST /api/v2/alerts`)."""
    ha: HaConfig = HaConfig()
    """Grafana with several replicas: one sender, elected on a Kubernetes Lease."""

    @field_validator("rule_files", mode="before")
    @classmethod
    def _rule_file_strings(cls, v: object) -> object:
        if isinstance(v, list):
            return [{"path": item} if isinstance(item, str) else item for item in v]
        return v

    def datasource(self, name: str) -> DatasourceConfig:
        for ds in self.datasources:
            if ds.name == name:
                return ds
        raise KeyError(name)
