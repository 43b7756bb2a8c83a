"""The one redaction of secrets, for log records, error messages and the dead-letter table.

Two things are replaced by ``<redacted>``: the literal secret values the daemon was given (the
integration key, app key, Grafana token or password, webhook token, datasource credentials:
``Config.secrets()``), and the value of any secret-looking query parameter
(``integration_key=``, ``app_key=``, ``token=``, ``password=``, plain or URL-encoded ``%3D``),
because Flashduty takes its keys in the query string. A 1-3 character "secret" would shred
ordinary text and is ignored. ``redact`` is idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "Redactor", "redact"]

REDACTED = "<redacted>"
# the value runs to the next separator; "<" ends a value, which keeps redact() idempotent
_QUERY_SECRET = re.compile(r"((?:integration_key|app_key|token|password)(?:=|%3D))[^&\s'\"<>)\]}]+", re.IGNORECASE)
_MIN_SECRET = 4


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the literal ``secrets`` and secret query values replaced by ``<redacted>``."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class Redactor:
    """``redact`` bound to a fixed set of secrets; ``value`` walks dicts and lists too."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return redact(text, self.secrets)

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            return self(v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        return v
