"""YAML + environment → one frozen, typed ``Config``.

This package is the only code that reads the config file or ``os.environ``. Every problem is
collected and reported at once by its YAML path (``rules[2].panels[0].width: must be ≥ 100 (got 0)``)
through ``ConfigError``; nothing else starts before the config is valid.

Rules of the format (architecture.md, "Config contract"):
* durations: ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` and sums such as ``1h30m``;
* ``${VAR}`` is required, ``${VAR:-default}`` optional; an empty variable counts as unset;
* unknown keys are errors;
* secrets (integration key, app key, Grafana token and password, webhook token, UI token,
  datasource credentials) are only ever read from the environment: a literal secret in the file is an error.

Modules, one job each:
* ``values``: durations, URLs, time zones, the strict base model;
* ``schema``: ``Config`` and the service sections; ``rule_schema``: rules, panels, rule files, webhook;
* ``env``: ``${VAR}`` interpolation and the secret paths;
* ``messages``: ``ConfigError``, pydantic errors → ``path: message`` lines;
* ``checks``: checks across fields and sections;
* ``dump``: ``redacted_dict`` (``print-config``), ``secret_values`` (the log redactor);
* ``load``: ``load_config`` / ``parse_config`` / ``resolve_config_path``, the stages in order
  (Prometheus rule files are read by ``sidecar.rules.files``).
"""

from __future__ import annotations

from sidecar.config.dump import redacted_dict, secret_values
from sidecar.config.load import CONFIG_ENV, DEFAULT_CONFIG_PATH, load_config, parse_config, resolve_config_path
from sidecar.config.messages import ConfigError, format_path
from sidecar.config.rule_schema import (
    PanelConfig,
    RuleConfig,
    RuleFileConfig,
    RuleSource,
    SeverityName,
    WebhookConfig,
)
from sidecar.config.schema import (
    BasicAuth,
    CaptureConfig,
    Config,
    DatasourceConfig,
    DeliveryConfig,
    FlashdutyConfig,
    GrafanaConfig,
    LogConfig,
    RateLimit,
    ServerConfig,
)
from sidecar.config.values import (
    Duration,
    HttpUrl,
    ImageFormat,
    Theme,
    format_duration,
    is_duration_field,
    parse_duration,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "BasicAuth",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "DatasourceConfig",
    "DeliveryConfig",
    "Duration",
    "FlashdutyConfig",
    "GrafanaConfig",
    "HttpUrl",
    "ImageFormat",
    "LogConfig",
    "PanelConfig",
    "RateLimit",
    "RuleConfig",
    "RuleFileConfig",
    "RuleSource",
    "ServerConfig",
    "SeverityName",
    "Theme",
    "WebhookConfig",
    "format_duration",
    "format_path",
    "is_duration_field",
    "load_config",
    "parse_config",
    "parse_duration",
    "redacted_dict",
    "resolve_config_path",
    "secret_values",
]
