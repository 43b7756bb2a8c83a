"""Templates: Prometheus spelling and Jinja spelling, humanize filters, error markers."""

from __future__ import annotations

import math

import pytest

from sidecar.metrics import Metrics
from sidecar.rules.templates import TemplateContext, TemplateEngine, format_value, rewrite

CTX = TemplateContext(
    labels={"service": "checkout", "values": "label-wins", "instance": "a:9090"},
    value=0.1234,
    rule="r",
    active_at=1_700_000_000.0,
    annotations={"summary": "sum"},
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("plain text, no templates", "plain text, no templates"),
        ("{{ $labels.service }} / {{ labels.service }}", "checkout / checkout"),
        ("{{ $value }}", "0.1234"),
        ("{{ value }}", "0.1234"),
        ("{{ $value | humanizePercentage }}", "12.34%"),
        ("{{ humanizePercentage $value }}", "12.34%"),
        ('{{ printf "%.2f" $value }}', "0.12"),
        ('{{ value | printf("%.1f") }}', "0.1"),
        ("{{ $labels.values }}", "label-wins"),
        ("{{ $labels.missing }}|", "|"),
        ("{{ $annotations.summary }} {{ annotations.summary }}", "sum sum"),
        ("{{ rule }}", "r"),
        ("{{ active_at.strftime('%Y-%m-%d') }}", "2023-11-14"),
        ("{{ $externalLabels.cluster }}-", "-"),
        ("costs $value outside a block", "costs $value outside a block"),
        ("{% if $value > 0.1 %}high{% else %}low{% endif %}", "high"),
        ("{% for k, v in labels.items() | sort %}{{ k }},{% endfor %}", "instance,service,values,"),
        ("{{ $labels.service | toUpper }}", "CHECKOUT"),
    ],
)
def test_render(source: str, expected: str) -> None:
    assert TemplateEngine().render(source, CTX) == expected


@pytest.mark.parametrize(
    ("flt", "value", "expected"),
    [
        ("humanize", 1234567.0, "1.235M"),
        ("humanize", 0.0012, "1.2m"),
        ("humanize", 0.0, "0"),
        ("humanize", math.nan, "NaN"),
        ("humanize1024", 1048576.0, "1Mi"),
        ("humanizeDuration", 93784.0, "1d 2h 3m 4s"),
        ("humanizeDuration", 61.0, "1m 1s"),
        ("humanizeDuration", 1.5, "1.5s"),
        ("humanizeDuration", 0.25, "250ms"),
        ("humanizeDuration", 0.0, "0s"),
        ("humanizePercentage", 0.5, "50%"),
        ("humanizeTimestamp", 0.0, "1970-01-01 00:00:00 UTC"),
    ],
)
def test_humanize_filters(flt: str, value: float, expected: str) -> None:
    ctx = TemplateContext(value=value)
    assert TemplateEngine().render(f"{{{{ $value | {flt} }}}}", ctx) == expected


@pytest.mark.parametrize(
    ("value", "text"), [(12.0, "12"), (0.5, "0.5"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN")]
)
def test_value_prints_like_prometheus(value: float, text: str) -> None:
    assert format_value(value) == text
    assert TemplateEngine().render("{{ $value }}", TemplateContext(value=value)) == text


def test_rewrite_only_touches_template_blocks() -> None:
    assert rewrite("$labels {{ $labels.a }} {% if $value %}{% endif %}") == (
        "$labels {{ labels.a }} {% if value %}{% endif %}"
    )


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ $value | nosuchfilter }}", "nosuchfilter"),
        ("{{ foo( }}", "TemplateSyntaxError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ value.__class__.__mro__ }}", "SecurityError"),
        ("{{ labels.service | humanize }}", "ValueError"),
    ],
)
def test_errors_render_a_marker(source: str, fragment: str) -> None:
    out = TemplateEngine().render(source, CTX)
    assert out.startswith("<error expanding template: ") and out.endswith(">")
    assert fragment in out


def test_sandbox_blocks_attribute_escape() -> None:
    out = TemplateEngine().render("{{ ''.__class__.__mro__[1].__subclasses__() }}", CTX)
    assert out.startswith("<error expanding template: SecurityError")


def test_errors_counted_every_time_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    engine = TemplateEngine(metrics=metrics)
    for _ in range(3):
        engine.render("{{ 1 / 0 }}", CTX)
    engine.render("{{ 2 / 0 }}", CTX)
    assert [r.getMessage() for r in caplog.records].count("template error") == 2
    assert metrics.registry.get_sample_value("flashduty_sidecar_template_errors_total", {"rule": "r"}) == 4


def test_compiled_once_per_template() -> None:
    engine = TemplateEngine()
    engine.render("{{ $value }}", CTX)
    first = engine._compiled["{{ $value }}"]
    engine.render("{{ $value }}", TemplateContext(value=2.0))
    assert engine._compiled["{{ $value }}"] is first
    assert engine.check("{{ ok }}") is None
    assert "TemplateSyntaxError" in (engine.check("{{ ( }}") or "")
