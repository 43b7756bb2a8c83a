"""Title, description, label and panel-variable templates: Jinja2 in a sandbox, Prometheus-flavoured.

Both spellings work::

    {{ $labels.service }} is at {{ $value | humanize }}       # Prometheus style
    {{ labels.service }} is at {{ value | humanizePercentage }} # Jinja style

Before compiling, ``$labels``, ``$value``, ``$annotations`` and ``$externalLabels`` inside ``{{ }}`` /
``{% %}`` blocks are rewritten to plain names, and the two most common Go call forms
(``{{ humanize $value }}`` and ``{{ printf "%.2f" $value }}``) are rewritten to Jinja. Names
available: ``labels``, ``value``, ``rule``, ``active_at`` (an aware UTC ``datetime`` or ``None``),
``annotations``, ``external_labels``. Filters: ``humanize``, ``humanize1024``, ``humanizeDuration``,
``humanizePercentage``, ``humanizeTimestamp``, ``printf`` (also a function), ``toUpper``, ``toLower``,
``title``.

Like Prometheus, a template error never fails an evaluation: the text becomes
``<error expanding template: …>``, the error is logged once per (rule, template) and counted in
``template_errors_total{rule}``. Each template string is compiled once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Template, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from sidecar.metrics import Metrics

__all__ = ["TemplateContext", "TemplateEngine", "format_value", "humanize", "humanize_duration"]

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.DOTALL)
_DOLLAR = re.compile(r"\$(labels|value|annotations|externalLabels)\b")
_HUMANIZE_CALL = re.compile(
    r"\{\{(-?)\s*(humanize(?:1024|Duration|Percentage|Timestamp)?|toUpper|toLower|title)\s+"
    r"(\$?[A-Za-z_][\w.]*)\s*(-?)\}\}"
)
_PRINTF_CALL = re.compile(r"\{\{(-?)\s*printf\s+(\"(?:[^\"\\]|\\.)*\")\s+([^}|]+?)\s*(-?)\}\}")
_DOLLAR_NAMES = {"externalLabels": "external_labels"}


class LabelSet(dict[str, str]):
    """A dict whose keys win over dict methods in templates: ``labels.values`` is the label."""


@dataclass(frozen=True)
class TemplateContext:
    """What a template sees. ``value`` is the sample value (NaN when there is none)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = math.nan
    rule: str = ""
    active_at: float | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def names(self) -> dict[str, Any]:
        return {
            "labels": LabelSet(self.labels),
            "value": Value(self.value),
            "rule": self.rule,
            "active_at": None if self.active_at is None else datetime.fromtimestamp(self.active_at, UTC),
            "annotations": LabelSet(self.annotations),
            "external_labels": LabelSet(),
        }


class Value(float):
    """A float that prints like Prometheus's ``$value`` (``12``, not ``12.0``; ``NaN``, ``+Inf``)."""

    def __str__(self) -> str:
        return format_value(float(self))

    __repr__ = __str__


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _g4(v: float) -> str:
    """Go's ``%.4g``, including its spelling of NaN and infinities."""
    if math.isnan(v) or math.isinf(v):
        return format_value(v)
    return f"{v:.4g}"


def _to_float(v: Any) -> float:
    if isinstance(v, Undefined):
        raise ValueError("value is undefined")
    if isinstance(v, str):
        return float(v.strip())
    return float(v)


def humanize(v: Any) -> str:
    """1234567 → ``1.235M``; 0.0012 → ``1.2m`` (Prometheus ``humanize``)."""
    x = _to_float(v)
    if x == 0 or math.isnan(x) or math.isinf(x):
        return _g4(x)
    prefix = ""
    if abs(x) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(x) < 1000:
                break
            prefix, x = p, x / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(x) >= 1:
                break
            prefix, x = p, x * 1000
    return _g4(x) + prefix


def humanize_1024(v: Any) -> str:
    x = _to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return _g4(x)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(x) < 1024:
            break
        prefix, x = p, x / 1024
    return _g4(x) + prefix


def humanize_duration(v: Any) -> str:
    """Seconds → ``1d 2h 3m 4s`` / ``1.5s`` / ``250ms`` (Prometheus ``humanizeDuration``)."""
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _g4(x)
    if x == 0:
        return "0s"
    if abs(x) >= 1:
        sign = "-" if x < 0 else ""
        x = abs(x)
        d = int(x)
        secs, mins, hours, days = d % 60, d // 60 % 60, d // 3600 % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {mins}m {secs}s"
        if hours:
            return f"{sign}{hours}h {mins}m {secs}s"
        if mins:
            return f"{sign}{mins}m {secs}s"
        return f"{sign}{_g4(x)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix, x = p, x * 1000
    return f"{_g4(x)}{prefix}s"


def humanize_percentage(v: Any) -> str:
    return _g4(_to_float(v) * 100) + "%"


def humanize_timestamp(v: Any) -> str:
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return _g4(x)
    return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def printf(fmt: str, *args: Any) -> str:
    """Go's ``printf`` for the common verbs (``%s``, ``%d``, ``%f``, ``%.2f``, ``%v``, ``%q``)."""
    py = re.sub(r"%(-?[\d.]*)v", r"%\1s", fmt).replace("%q", "%r")
    conv = tuple(float(a) if isinstance(a, Value) else a for a in args)
    return py % conv


def _printf_filter(value: Any, fmt: str) -> str:
    return printf(fmt, value)


def rewrite(source: str) -> str:
    """Prometheus template spelling → Jinja, leaving text outside ``{{ }}`` / ``{% %}`` alone."""
    source = _HUMANIZE_CALL.sub(lambda m: f"{{{{{m[1]} {m[3]} | {m[2]} {m[4]}}}}}", source)
    source = _PRINTF_CALL.sub(lambda m: f"{{{{{m[1]} printf({m[2]}, {m[3].strip()}) {m[4]}}}}}", source)
    return _BLOCK.sub(
        lambda m: _DOLLAR.sub(lambda d: _DOLLAR_NAMES.get(d[1], d[1]), m[0]),
        source,
    )


class _Environment(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, LabelSet) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _new_environment() -> _Environment:
    env = _Environment(autoescape=False, keep_trailing_newline=True, undefined=Undefined)
    env.filters.update(
        humanize=humanize,
        humanize1024=humanize_1024,
        humanizeDuration=humanize_duration,
        humanizePercentage=humanize_percentage,
        humanizeTimestamp=humanize_timestamp,
        printf=_printf_filter,
        toUpper=lambda s: str(s).upper(),
        toLower=lambda s: str(s).lower(),
    )
    env.globals.update(printf=printf)
    return env


class TemplateEngine:
    """Compiles each template string once and renders it; never raises on a template error."""

    def __init__(self, *, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._env = _new_environment()
        self._compiled: dict[str, Template | str] = {}  # source → template, or the compile error
        self._logged: set[tuple[str, str]] = set()

    def render(self, source: str, ctx: TemplateContext) -> str:
        """Expand ``source``; on any error, the ``<error expanding template: …>`` marker."""
        if "{" not in source:
            return source  # plain text: nothing to expand (the common case for titles)
        compiled = self._compile(source)
        if isinstance(compiled, str):
            return self._failed(source, ctx.rule, compiled)
        try:
            return compiled.render(ctx.names())
        # A user's template can raise nearly anything from a filter (TypeError, ValueError,
        # ZeroDivisionError, SecurityError...). None of it may stop an evaluation.
        except Exception as e:
            return self._failed(source, ctx.rule, _describe(e))

    def render_map(self, sources: Mapping[str, str], ctx: TemplateContext) -> dict[str, str]:
        return {k: self.render(v, ctx) for k, v in sources.items()}

    def check(self, source: str) -> str | None:
        """The compile error of ``source``, or ``None`` (for config checks)."""
        compiled = self._compile(source)
        return compiled if isinstance(compiled, str) else None

    def _compile(self, source: str) -> Template | str:
        cached = self._compiled.get(source)
        if cached is None:
            try:
                cached = self._env.from_string(rewrite(source))
            except TemplateError as e:
                cached = _describe(e)
            if len(self._compiled) > 10_000:  # templates come from config: bounded, but be safe
                self._compiled.clear()
            self._compiled[source] = cached
        return cached

    def _failed(self, source: str, rule: str, message: str) -> str:
        if self._metrics is not None:
            self._metrics.template_errors.labels(rule=rule or "-").inc()
        if (rule, source) not in self._logged:
            self._logged.add((rule, source))
            log.warning(
                "template error",
                extra={"rule": rule, "template": source[:200], "error": message},
            )
        return f"<error expanding template: {message}>"


def _describe(e: BaseException) -> str:
    lineno = getattr(e, "lineno", None)
    where = f" (line {lineno})" if isinstance(lineno, int) and lineno > 1 else ""
    return f"{type(e).__name__}: {e}{where}"
