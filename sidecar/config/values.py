"""The config format's value types: durations, http(s) URLs, time zones, and the strict base model.

* durations: ``250ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1w`` and sums such as ``1h30m``; a bare
  ``0`` is allowed, other bare numbers are not (``Duration``, ``parse_duration``, ``format_duration``);
* ``HttpUrl``: an ``http://`` or ``https://`` URL with a host, trailing ``/`` removed;
* ``ImageFormat`` (png, jpeg, webp) and ``Theme`` (dark, light) of the pictures;
* time zones: IANA names, plus ``utc`` (→ ``UTC``) and Grafana's ``browser``;
* every section model forbids unknown keys and is frozen (``StrictModel``).
"""

from __future__ import annotations

import re
import typing
import zoneinfo
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

__all__ = [
    "Duration",
    "HttpUrl",
    "ImageFormat",
    "StrictModel",
    "Theme",
    "check_timezone",
    "format_duration",
    "is_duration_field",
    "parse_duration",
]

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
    """5400.0 → ``"90m"``: the largest unit that divides exactly; below a second, milliseconds."""
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


def is_duration_field(info: Any) -> bool:
    """Whether a model field (a pydantic ``FieldInfo``) holds a ``Duration`` (or ``Duration | None``)."""
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in info.metadata):
        return True
    return any(a is Duration for a in typing.get_args(info.annotation))


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL (got {value!r})")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]

ImageFormat = Literal["png", "jpeg", "webp"]
Theme = Literal["dark", "light"]


def check_timezone(v: str) -> str:
    """An IANA zone name as given; ``utc`` → ``UTC``; ``browser`` passes (Grafana's own value)."""
    if v in ("browser", "utc"):
        return "UTC" if v == "utc" else v
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Paris)") from None
    return v


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen, field docstrings
    become the descriptions that ``sidecar.configdoc`` prints."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True)
