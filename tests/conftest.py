"""Shared test settings: fixtures and session hooks only (helpers are in tests/support/).

With ``SIDECAR_STRICT_DEPS=1`` (set by ``.ci/run``) a missing Chromium, Prometheus or
Alertmanager is an error instead of a skip, so CI can never pass by skipping the real-part tests.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.browsers import find_chromium


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("SIDECAR_STRICT_DEPS") != "1":
        return
    missing = []
    if find_chromium() is None:
        missing.append("chromium")
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            missing.append(binary)
    if missing:
        raise pytest.UsageError(f"SIDECAR_STRICT_DEPS=1 but not installed: {', '.join(missing)}")
