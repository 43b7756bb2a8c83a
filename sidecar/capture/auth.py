"""Grafana's credentials as one ``Authorization`` header value.

The service-account token wins over basic auth. The same value goes to the dashboard API
(``dashboards``) and, in the browser, to requests for Grafana's origin only
(``network.install_auth`` with ``urls.auth_url_pattern``).
"""

from __future__ import annotations

import base64

from sidecar.config import GrafanaConfig

__all__ = ["auth_header"]


def auth_header(cfg: GrafanaConfig) -> str | None:
    """The ``Authorization`` value for Grafana: the service-account token, else basic auth."""
    if cfg.token is not None and cfg.token.get_secret_value():
        return "Bearer " + cfg.token.get_secret_value()
    if cfg.basic_auth is not None:
        raw = f"{cfg.basic_auth.username}:{cfg.basic_auth.password.get_secret_value()}"
        return "Basic " + base64.b64encode(raw.encode()).decode("ascii")
    return None
