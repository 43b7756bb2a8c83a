"""YAML + environment → one frozen, typed ``Config``.

This is the only module that reads YAML or ``os.environ``. Every problem is collected and
reported at once by its YAML path (``rules[2].panels[0].width: must be ≥ 100 (got 0)``) through
``ConfigError``; nothing else starts before the config is valid.

Rules of the format (architecture.md, "Config contract"):
* durations: ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` and sums such as ``1h30m``;
* ``${VAR}`` is required, ``${VAR:-default}`` optional; an empty variable counts as unset;
* unknown keys are errors;
* secrets (integration key, app key, Grafana token and password, webhook token, datasource
  credentials) are only ever read from the environment: a literal secret in the file is an error.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import typing
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = ["Config", "ConfigError", "load_config", "parse_duration", "redacted_dict"]

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_ENV = "FLASHDUTY_SIDECAR_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid. ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """``"1h30m"`` → 5400.0 seconds. A bare ``0`` is allowed; other bare numbers are not."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration such as 30s, 5m, 1h (got {value!r})")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"must be a duration such as 30s, 5m, 1h (got {value!r})")
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"must be a duration such as 250ms, 30s, 5m, 1h, 1d (got {value!r})")
    return total


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL (got {value!r})")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------- sections


class RateLimit(_Model):
    per_second: int = Field(gt=0)
    """Requests allowed in any rolling second."""
    per_minute: int = Field(gt=0)
    """Requests allowed in any rolling minute."""


class FlashdutyConfig(_Model):
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


class BasicAuth(_Model):
    username: str = Field(min_length=1)
    """User name."""
    password: SecretStr
    """Password. Secret: `${VAR}` only."""


class GrafanaConfig(_Model):
    url: HttpUrl = "http://localhost:3000"
    """Grafana base URL as the sidecar reaches it (in a pod: `http://localhost:3000`)."""
    org_id: int = Field(default=1, ge=1)
    """Grafana organisation of the dashboards."""
    token: SecretStr | None = None
    """Service-account token (Viewer is enough). Sent only to requests for this origin. Secret."""
    basic_auth: BasicAuth | None = None
    """Basic auth instead of a token: `{username, password}`."""
    theme: Literal["dark", "light"] = "dark"
    """Theme of the pictures: `dark` or `light`."""
    timezone: str = "UTC"
    """IANA time zone of the pictures' time axis (URL `tz=` and the browser), and of `cron` schedules."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v)

    @model_validator(mode="after")
    def _one_auth(self) -> GrafanaConfig:
        if self.token is not None and self.basic_auth is not None:
            raise ValueError("set either token or basic_auth, not both")
        return self


def _check_timezone(v: str) -> str:
    if v in ("browser", "utc"):
        return "UTC" if v == "utc" else v
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Paris)") from None
    return v


ImageFormat = Literal["png", "jpeg", "webp"]


class CaptureConfig(_Model):
    browser_path: str = ""
    """Chromium executable; empty uses Playwright's own browser."""
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


class ServerConfig(_Model):
    listen: str = "0.0.0.0:9464"
    """Address of `/healthz`, `/readyz`, `/metrics` and `/webhook/alertmanager`."""
    webhook_token: SecretStr | None = None
    """When set, webhooks must send `Authorization: Bearer <token>`. Secret."""
    webhook_max_body: int = Field(default=1024 * 1024, ge=1024)
    """Largest webhook body accepted, in bytes (larger: 413)."""
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


class DeliveryConfig(_Model):
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


class DatasourceConfig(_Model):
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


class PanelConfig(_Model):
    dashboard: str = Field(min_length=1)
    """Dashboard uid."""
    panel: int | str | None = None
    """Panel id (`4`) or Scenes key (`panel-4`); omit for the whole dashboard."""
    title: str | None = None
    """Picture caption (`images[].alt`); default: the panel's title, else `dashboard/panel`."""
    range: Duration | None = None
    """Show the last `range` before the capture; default: a window around the alert's start."""
    from_: str | None = Field(default=None, alias="from")
    """Start of the window, Grafana syntax (`now-6h`); with `to`, instead of `range`."""
    to: str | None = None
    """End of the window, Grafana syntax (`now`)."""
    vars: dict[str, str] = Field(default_factory=dict)
    """Dashboard variables (`var-<name>`), templated from the alert's labels."""
    width: int | None = Field(default=None, ge=100, le=3000)
    """Overrides `capture.width`."""
    height: int | None = Field(default=None, ge=100, le=3000)
    """Overrides `capture.height`."""
    scale: float | None = Field(default=None, ge=0.5, le=4.0)
    """Overrides `capture.scale`."""
    theme: Literal["dark", "light"] | None = None
    """Overrides `grafana.theme`."""
    format: ImageFormat | None = None
    """Overrides `capture.format`."""

    @field_validator("panel", mode="before")
    @classmethod
    def _panel(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("must be a panel id (4) or a Scenes key (panel-4)")
        if isinstance(v, str) and not re.fullmatch(r"\d+|panel-\d+(-clone-\d+)?|[A-Za-z0-9_-]+", v):
            raise ValueError(f"must be a panel id (4) or a Scenes key (panel-4), got {v!r}")
        return v

    @model_validator(mode="after")
    def _window(self) -> PanelConfig:
        if self.range is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("set either range or from/to, not both")
        if self.range is not None and self.range <= 0:
            raise ValueError("range must be > 0")
        return self

    @property
    def panel_key(self) -> str | None:
        return None if self.panel is None else str(self.panel)


RuleSource = Literal["prometheus", "grafana", "schedule"]
SeverityName = Literal["Critical", "Warning", "Info"]


class RuleConfig(_Model):
    name: str = Field(min_length=1, max_length=200)
    """Unique rule name; `alertname` of its alerts and the `sidecar_rule` label in Flashduty."""
    source: RuleSource
    """`prometheus` (PromQL), `grafana` (mirror Grafana-managed rules) or `schedule` (reports)."""
    datasource: str | None = None
    """Datasource of a prometheus rule (optional when there is only one)."""
    expr: str | None = None
    """PromQL expression of a prometheus rule; every result sample is an alert instance."""
    every: Duration | None = None
    """Evaluation interval (default 30s); for a schedule rule, the report interval."""
    cron: str | None = None
    """Schedule rules: 5-field cron in `grafana.timezone`, instead of `every`."""
    for_: Duration = Field(default=0.0, alias="for")
    """How long an instance must stay true before it fires (Prometheus `for`); prometheus rules only (a grafana rule mirrors Grafana's own pending period, a report fires when it is due)."""
    keep_firing_for: Duration = 0.0
    """How long a firing instance keeps firing after its condition is gone."""
    severity: SeverityName = "Warning"
    """`Critical`, `Warning` or `Info` while firing; a schedule rule's default is `Info`."""
    title: str | None = None
    """Alert title (Jinja2 template; `{{ $labels.x }}`, `{{ $value }}`); default: the `summary` annotation, else the rule name (a grafana rule: the Grafana rule's name)."""
    description: str = ""
    """Alert description (template); default: the `description` annotation, else empty."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every instance (templates allowed; they override the series' labels)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra template values, available as `annotations` (and `$annotations`)."""
    panels: list[PanelConfig] = Field(default_factory=list)
    """Grafana panels to capture for this rule's alerts."""
    resend_interval: Duration | None = None
    """Overrides `delivery.resend_interval` for this rule."""

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v: object) -> object:
        if isinstance(v, str) and v.lower() in ("critical", "warning", "info"):
            return v.capitalize()
        return v

    @property
    def interval(self) -> float:
        return self.every if self.every is not None else 30.0


class RuleFileConfig(_Model):
    path: str = Field(min_length=1)
    """A Prometheus rule file or glob, relative to this config file."""
    datasource: str | None = None
    """Datasource for its rules (optional when there is only one)."""


class WebhookConfig(_Model):
    default_severity: SeverityName = "Warning"
    """Severity of webhook alerts without a `severity` label."""
    panels_from_annotations: bool = True
    """Capture the panels named by `grafana_dashboard_uid`/`grafana_panel_id` (or Grafana's `__dashboardUid__`/`__panelId__`, `panelURL`)."""
    panels: list[PanelConfig] = Field(default_factory=list)
    """Panels captured for every webhook alert."""

    @field_validator("default_severity", mode="before")
    @classmethod
    def _severity(cls, v: object) -> object:
        return RuleConfig._severity(v)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug`, `info`, `warning` or `error`."""
    format: Literal["auto", "json", "text"] = "auto"
    """`json`, `text`, or `auto` (JSON unless stdout is a terminal)."""


class Config(_Model):
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
    state_dir: str = "/var/lib/flashduty-sidecar"
    """Directory of the SQLite outbox, rule state and image-key cache (emptyDir or PVC)."""
    datasources: list[DatasourceConfig] = Field(default_factory=list)
    """Prometheus-compatible datasources for prometheus rules."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """Alert rules and scheduled reports."""
    rule_files: list[RuleFileConfig] = Field(default_factory=list)
    """Prometheus rule files to load as prometheus rules (strings or `{path, datasource}`)."""
    webhook: WebhookConfig = WebhookConfig()
    """Alerts received on `POST /webhook/alertmanager`."""

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


# --------------------------------------------------------------------------- env interpolation

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

# paths (as tuples with "*" for list indices and dict keys) whose values are secrets
_SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("flashduty", "integration_key"),
    ("flashduty", "app_key"),
    ("grafana", "token"),
    ("grafana", "basic_auth", "password"),
    ("server", "webhook_token"),
    ("datasources", "*", "bearer_token"),
    ("datasources", "*", "basic_auth", "password"),
)


def _is_secret_path(path: tuple[str | int, ...]) -> bool:
    for pattern in _SECRET_PATHS:
        if len(pattern) == len(path) and all(p == "*" or p == q for p, q in zip(pattern, path, strict=True)):
            return True
    return False


def _interpolate(node: Any, path: tuple[str | int, ...], env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, (*path, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*path, i), env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        if _is_secret_path(path) and node is not None:
            problems.append(f"{format_path(path)}: secrets must come from the environment: write ${{VAR}}")
        return node
    if _is_secret_path(path) and node.strip() and not _ENV_REF.search(node):
        problems.append(f"{format_path(path)}: secrets must come from the environment: write ${{VAR}}")
        return node

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        problems.append(f"{format_path(path)}: environment variable {name} is not set")
        return ""

    out = _ENV_REF.sub(repl, node)
    if _is_secret_path(path) and out == "":
        return None  # optional secret left unset
    return out


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


# --------------------------------------------------------------------------- error messages


def _describe(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {value!r})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {sign} {bound} (got {value!r})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer (got {value!r})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {value!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {value!r})"
    if kind in ("string_type",):
        return f"must be a string (got {value!r})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {type(value).__name__})"
    if kind == "list_type":
        return f"must be a list (got {type(value).__name__})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


_UNION_NOISE = {"int", "str", "float", "none", "function-after[_panel(), union[int,str,none]]"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch and validator names from an error location."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (part in _UNION_NOISE or part.startswith(("function-", "union["))):
            continue
        if isinstance(part, str) and part.endswith("_") and part[:-1] in ("for", "from"):
            part = part[:-1]
        out.append(part)
    return tuple(out)


def _validation_problems(exc: ValidationError) -> list[str]:
    seen: set[str] = set()
    problems: list[str] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        line = f"{format_path(loc)}: {_describe(err)}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


# --------------------------------------------------------------------------- cross-field checks


def _cross_checks(raw: dict[str, Any], cfg: Config | None) -> list[str]:
    """Checks across fields; run even when other parts failed, on every rule that parsed."""
    problems: list[str] = []
    raw_ds: list[Any] = raw["datasources"] if isinstance(raw.get("datasources"), list) else []
    ds_names = [d.get("name") for d in raw_ds if isinstance(d, dict)]
    for i, name in enumerate(ds_names):
        if name is not None and ds_names.index(name) != i:
            problems.append(f"datasources[{i}].name: duplicate datasource name {name!r}")
    if cfg is not None:
        for i, d in enumerate(cfg.datasources):
            if d.bearer_token is not None and d.basic_auth is not None:
                problems.append(f"datasources[{i}]: set either bearer_token or basic_auth, not both")
    tz = cfg.grafana.timezone if cfg is not None else "UTC"
    raw_rules: list[Any] = raw["rules"] if isinstance(raw.get("rules"), list) else []
    names: dict[str, int] = {}
    for i, r in enumerate(raw_rules):
        p = f"rules[{i}]"
        name = r.get("name") if isinstance(r, dict) else None
        if isinstance(name, str) and name in names:
            problems.append(f"{p}.name: duplicate rule name {name!r} (also rules[{names[name]}])")
        elif isinstance(name, str):
            names[name] = i
        try:
            rule = cfg.rules[i] if cfg is not None else RuleConfig.model_validate(r)
        except ValidationError:
            continue  # already reported
        if rule.name == "webhook":
            problems.append(f"{p}.name: 'webhook' is reserved for alerts received on the webhook")
        problems.extend(_check_rule(rule, p, [n for n in ds_names if isinstance(n, str)], tz))
    return problems


def _check_rule(rule: RuleConfig, p: str, ds_names: list[str], tz: str) -> list[str]:
    problems: list[str] = []
    if rule.every is not None and rule.every < 1:
        problems.append(f"{p}.every: must be ≥ 1s (got {format_duration(rule.every)})")
    if rule.source == "prometheus":
        if not rule.expr:
            problems.append(f"{p}.expr: required for a prometheus rule")
        if rule.datasource is None:
            if len(ds_names) != 1:
                problems.append(f"{p}.datasource: required (there are {len(ds_names)} datasources)")
        elif rule.datasource not in ds_names:
            known = ", ".join(ds_names) or "none defined"
            problems.append(f"{p}.datasource: unknown datasource {rule.datasource!r} (known: {known})")
        if rule.cron is not None:
            problems.append(f"{p}.cron: only schedule rules take a cron; use every")
    elif rule.source == "grafana":
        for key in ("expr", "datasource", "cron"):
            if getattr(rule, key) is not None:
                problems.append(f"{p}.{key}: not used by a grafana rule (it mirrors Grafana's own rules)")
        if rule.for_:
            problems.append(f"{p}.for: not used by a grafana rule (Grafana's own pending period applies)")
    else:  # schedule
        if (rule.cron is None) == (rule.every is None):
            problems.append(f"{p}: a schedule rule needs exactly one of cron or every")
        if rule.cron is not None:
            err = _check_cron(rule.cron, tz)
            if err:
                problems.append(f"{p}.cron: {err}")
        if not rule.panels:
            problems.append(f"{p}.panels: a schedule rule needs at least one panel to capture")
        if rule.expr is not None or rule.datasource is not None:
            problems.append(f"{p}: a schedule rule takes no expr or datasource")
        if rule.for_:
            problems.append(f"{p}.for: not used by a schedule rule (a report fires when it is due)")
    if rule.source != "schedule" and rule.for_ < 0:
        problems.append(f"{p}.for: must be ≥ 0")
    return problems


def _check_cron(expr: str, tz: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    if len(expr.split()) != 5:
        return f"must have 5 fields (minute hour day month weekday), got {expr!r}"
    try:
        CronTrigger.from_crontab(expr, timezone=tz if tz != "browser" else "UTC")
    except ValueError as e:
        return f"invalid cron expression {expr!r}: {e}"
    return None


# --------------------------------------------------------------------------- Prometheus rule files


def _load_rule_files(raw: dict[str, Any], base: Path, problems: list[str]) -> None:
    """Expand ``rule_files`` into plain ``rules`` entries (source: prometheus)."""
    entries = raw.get("rule_files") or []
    if not isinstance(entries, list):
        return
    rules = raw.setdefault("rules", [])
    if not isinstance(rules, list):
        return
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue  # reported by the model validation
        pattern = entry["path"]
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        files = sorted(glob.glob(full))
        if not files:
            problems.append(f"rule_files[{i}].path: no file matches {pattern!r}")
            continue
        for f in files:
            rules.extend(_rules_from_file(Path(f), entry.get("datasource"), f"rule_files[{i}]", problems))


def _rules_from_file(path: Path, datasource: str | None, p: str, problems: list[str]) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{p}: cannot read {path.name}: {e}")
        return []
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list):
        problems.append(f"{p}: {path.name}: expected a Prometheus rule file with 'groups:'")
        return []
    out: list[dict[str, Any]] = []
    for gi, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        for ri, r in enumerate(group.get("rules") or []):
            if not isinstance(r, dict) or "alert" not in r:
                continue  # recording rules are not ours
            where = f"{p}: {path.name} groups[{gi}].rules[{ri}]"
            try:
                out.append(_prom_rule(r, group, datasource))
            except (KeyError, TypeError, ValueError) as e:
                problems.append(f"{where}: {e}")
    return out


def _prom_rule(r: dict[str, Any], group: dict[str, Any], datasource: str | None) -> dict[str, Any]:
    labels = {**(group.get("labels") or {}), **(r.get("labels") or {})}
    labels = {str(k): str(v) for k, v in labels.items()}
    ann = {str(k): str(v) for k, v in (r.get("annotations") or {}).items()}
    severity = labels.get("severity", "Warning")
    rule: dict[str, Any] = {
        "name": str(r["alert"]),
        "source": "prometheus",
        "expr": str(r["expr"]),
        "every": group.get("interval", "30s"),
        "for": r.get("for", "0s"),
        "keep_firing_for": r.get("keep_firing_for", "0s"),
        "severity": severity if severity.lower() in ("critical", "warning", "info") else "Warning",
        "title": ann.get("summary") or str(r["alert"]),
        "description": ann.get("description", ""),
        "labels": labels,
        "annotations": ann,
        "panels": _panels_from_annotations(ann),
    }
    if datasource is not None:
        rule["datasource"] = datasource
    return rule


def _panels_from_annotations(ann: Mapping[str, str]) -> list[dict[str, Any]]:
    """``grafana_dashboard_uid`` + ``grafana_panel_id`` (comma-separated for several panels)."""
    uid = ann.get("grafana_dashboard_uid") or ann.get("__dashboardUid__")
    if not uid:
        return []
    ids = ann.get("grafana_panel_id") or ann.get("__panelId__")
    if not ids:
        return [{"dashboard": uid}]
    return [{"dashboard": uid, "panel": pid.strip()} for pid in ids.split(",") if pid.strip()]


# --------------------------------------------------------------------------- loading


def resolve_config_path(path: str | None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate; raise ``ConfigError`` with every problem found."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p}: cannot read config file: {e.strerror or e}"]) from None
    return parse_config(text, env=env, base=p.parent)


def parse_config(text: str, *, env: Mapping[str, str], base: Path | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping (got {type(raw).__name__})"])
    problems: list[str] = []
    raw = _interpolate(raw, (), env, problems)
    _load_rule_files(raw, base or Path.cwd(), problems)
    env_paths = {line.split(": ", 1)[0] for line in problems}
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        # a value left empty by a missing variable is reported once, as the missing variable
        problems.extend(line for line in _validation_problems(e) if line.split(": ", 1)[0] not in env_paths)
    problems.extend(_cross_checks(raw, cfg))
    if problems or cfg is None:
        raise ConfigError(problems)
    return cfg


def redacted_dict(cfg: Config) -> dict[str, Any]:
    """The merged config as plain data, durations as strings, every secret as ``<redacted>``."""

    def walk(node: Any, model_field: Any = None) -> Any:
        if isinstance(node, BaseModel):
            out: dict[str, Any] = {}
            for name, info in type(node).model_fields.items():
                key = info.alias or name
                value = getattr(node, name)
                if _is_duration_field(info):
                    out[key] = None if value is None else format_duration(value)
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, SecretStr):
            return "<redacted>"
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    result = walk(cfg)
    assert isinstance(result, dict)
    return result


def _is_duration_field(info: Any) -> bool:
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in info.metadata):
        return True
    return any(a is Duration for a in typing.get_args(info.annotation))
