"""The JSON body of a request that pushes alerts: bytes → a decoded document, or ``PayloadError``.

Minimal: UTF-8 and ``json.loads``; the message says what is wrong, never echoes the body.
"""

from __future__ import annotations

import json
from typing import Any

from .payload import PayloadError

__all__ = ["decode_json"]


def decode_json(body: bytes) -> Any:
    """``body`` decoded as JSON; raises ``PayloadError`` (empty, not UTF-8, not JSON)."""
    if not body.strip():
        raise PayloadError("body: empty")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise PayloadError("body: not UTF-8") from None
    except ValueError as e:
        raise PayloadError(f"body: not valid JSON: {e}") from None
