"""The Chromium the browser tests use."""

from __future__ import annotations

from sidecar_sandbox.demo import find_browser


def find_chromium() -> str | None:
    """$SIDECAR_CHROMIUM, else a Chromium on PATH (the demo's own detection); None: skip."""
    return find_browser(None) or None
