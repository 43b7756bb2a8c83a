"""The sandbox's HTML view of received alerts, laid out the way Flashduty shows them: newest
first, title, severity and status badges, labels as chips, description, event count, times,
the pictures inline, and each alert's event timeline.

Self-contained (inline CSS, no scripts, no external assets) and autoescaped by Jinja2. Links
and image URLs from pushed payloads are only rendered when they are http(s).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2

from .flashduty_alerts import Alert, EventRecord
from .flashduty_events import ImageRef

ImageUrl = Callable[[str], str]

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<title>Flashduty sandbox: {{ alerts|length }} alerts</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1f2329}
header{background:#1f2329;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:18px;margin:0}header span{color:#c9cdd4;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
.alert{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:0 0 16px;padding:16px 20px;
border-left:6px solid #8f959e}
.alert.Critical{border-left-color:#f53f3f}.alert.Warning{border-left-color:#ff7d00}
.alert.Info{border-left-color:#3370ff}.alert.closed{opacity:.85}
.alert h2{font-size:17px;margin:0 0 8px;word-break:break-word}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff;
margin-right:6px;background:#8f959e}
.badge.Critical{background:#f53f3f}.badge.Warning{background:#ff7d00}.badge.Info{background:#3370ff}
.badge.Ok{background:#00b42a}.meta{color:#646a73;font-size:13px;margin:6px 0}
.chips{margin:8px 0}.chip{display:inline-block;background:#eff0f1;border-radius:12px;padding:2px 10px;
margin:2px 4px 2px 0;font-size:12px;font-family:ui-monospace,monospace;word-break:break-all}
.desc{white-space:pre-wrap;background:#f7f8fa;border-radius:4px;padding:8px 10px;font-size:13px}
.images{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
figure{margin:0;background:#f7f8fa;border:1px solid #e5e6eb;border-radius:6px;padding:6px;max-width:100%}
figure img{display:block;max-width:520px;max-height:320px;height:auto}
figcaption{font-size:12px;color:#646a73;margin-top:4px}
details{margin-top:8px;font-size:13px}ol.timeline{margin:6px 0;padding-left:20px}
ol.timeline li{margin:3px 0}.empty{color:#646a73;text-align:center;padding:48px}
</style></head>
<body>
<header><h1>Flashduty sandbox</h1>
<span>{{ alerts|length }} alerts ({{ active }} active)</span>
{% for name, value in stats %}<span>{{ name }}: {{ value }}</span>{% endfor %}
</header>
<main>
{% for a in alerts %}
<section class="alert {{ a.severity }}{% if not a.active %} closed{% endif %}" id="alert-{{ a.alert_id }}">
<h2>{{ a.title }}</h2>
<div><span class="badge {{ a.severity }}">{{ a.severity }}</span>
<span class="badge {{ a.status }}">{{ "Recovered" if a.status == "Ok" else "Firing: " ~ a.status }}</span>
<span class="meta">{{ a.event_cnt }} event{{ "" if a.event_cnt == 1 else "s" }}</span></div>
<div class="meta">started {{ a.start }} &middot; last {{ a.last }}{% if a.end %} &middot; ended {{ a.end }}{% endif %}
&middot; {{ a.integration }} &middot; alert_id {{ a.alert_id }} &middot; key {{ a.alert_key }}</div>
{% if a.labels %}<div class="chips">{% for k, v in a.labels %}
<span class="chip">{{ k }}={{ v }}</span>{% endfor %}</div>{% endif %}
{% if a.description %}<div class="desc">{{ a.description }}</div>{% endif %}
{% if a.images %}<div class="images">{% for img in a.images %}<figure>
{% if img.href %}<a href="{{ img.href }}" rel="noopener noreferrer">{% endif %}
<img src="{{ img.url }}" alt="{{ img.alt }}" loading="lazy">{% if img.href %}</a>{% endif %}
<figcaption>{{ img.alt or "(no alt)" }}</figcaption></figure>{% endfor %}</div>{% endif %}
<details open><summary>Timeline ({{ a.events|length }})</summary><ol class="timeline">
{% for e in a.events %}<li><span class="badge {{ e.status }}">{{ e.status }}</span>{{ e.time }} &middot; {{ e.title }}
{% if e.images %} &middot; images: {{ e.images|join(", ") }}{% endif %}
{% for w in e.warnings %}<div class="meta">warning: {{ w }}</div>{% endfor %}</li>{% endfor %}
</ol></details>
</section>
{% else %}
<p class="empty">No alerts received yet.</p>
{% endfor %}
</main></body></html>
"""


def default_image_url(key: str) -> str:
    return "/_sandbox/images/" + quote(key, safe="")


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE)


def render_page(
    alerts: Sequence[Alert],
    *,
    stats: Mapping[str, Any] | None = None,
    image_url: ImageUrl = default_image_url,
    refresh: int | None = None,
) -> str:
    """The page; ``image_url`` maps an ``img_`` key to a URL (e.g. files of a static gallery)."""
    views = [_alert_view(alert, image_url) for alert in reversed(alerts)]
    return _template().render(
        alerts=views,
        active=sum(1 for alert in alerts if alert.active),
        stats=list((stats or {}).items()),
        refresh=refresh,
    )


def _alert_view(alert: Alert, image_url: ImageUrl) -> dict[str, Any]:
    images = [view for image in alert.images.values() if (view := _image_view(image, image_url))]
    return {
        "alert_id": alert.alert_id,
        "alert_key": alert.alert_key,
        "title": alert.title,
        "severity": alert.alert_severity,
        "status": alert.alert_status,
        "active": alert.active,
        "event_cnt": alert.event_cnt,
        "start": _time(alert.start_time),
        "last": _time(alert.last_time),
        "end": _time(alert.end_time) if alert.end_time else "",
        "integration": alert.integration.integration_name,
        "labels": sorted(alert.labels.items()),
        "description": alert.description,
        "images": images,
        "events": [_event_view(event) for event in alert.events],
    }


def _image_view(image: ImageRef, image_url: ImageUrl) -> dict[str, str] | None:
    if image.src.startswith("img_"):
        url = image_url(image.src)
    elif _is_http(image.src):
        url = image.src
    else:
        return None
    return {"url": url, "alt": image.alt, "href": image.href if _is_http(image.href) else ""}


def _event_view(event: EventRecord) -> dict[str, Any]:
    return {
        "status": event.event_status,
        "time": _time(event.event_time),
        "title": event.title,
        "images": [image.alt or "(no alt)" for image in event.images],
        "warnings": event.warnings,
    }


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
