"""Standard Alert payload within Flashduty's documented field limits.

Flashduty truncates or silently drops what is too long (flashduty-api.md §1.2); we do it first,
deterministically, and say so in the description when something the user would miss is gone:

* ``title_rule`` ≤ 512 and ``description`` ≤ 2048 characters, cut by characters with ``…``;
  notes (missing pictures, dropped labels) are appended to the description and win over the
  tail of the user's text;
* ``labels``: ≤ 50 (``sidecar_rule``, ``alertname``, ``severity`` kept first, then by key),
  key ≤ 128 (longer keys are dropped with a note: a cut key would be a different label),
  value ≤ 2048 (cut); ``layer_person_reset_*`` / ``layer_webhook_reset_*`` only when the rule
  itself set them (``allowed_reserved``), never from instance labels;
* ``images``: ``src`` ≤ 256 (longer: the image is dropped with a note, as the server would drop
  it silently), ``alt`` non-empty, ≤ 128 and distinct (the server keeps one image per alt),
  ``href`` ≤ 256 or left out;
* ``event_time`` is not sent (not in the current documentation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.model import RULE_MARKER, AlertEvent

__all__ = [
    "MAX_ALT",
    "MAX_DESCRIPTION",
    "MAX_HREF",
    "MAX_LABELS",
    "MAX_LABEL_KEY",
    "MAX_LABEL_VALUE",
    "MAX_SRC",
    "MAX_TITLE",
    "RESERVED_PREFIXES",
    "ImageRef",
    "build_payload",
    "truncate",
]

MAX_TITLE = 512
MAX_DESCRIPTION = 2048
MAX_LABELS = 50
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 2048
MAX_SRC = 256
MAX_ALT = 128
MAX_HREF = 256

ELLIPSIS = "…"
RESERVED_PREFIXES = ("layer_person_reset_", "layer_webhook_reset_")
FIRST_LABELS = (RULE_MARKER, "alertname", "severity")
NOTES_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ImageRef:
    """One picture of an alert: ``src`` is an ``image_key`` (or a public URL)."""

    src: str
    alt: str
    href: str | None = None


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``…`` when cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1] + ELLIPSIS


def _short(text: str, limit: int = 40) -> str:
    return truncate(text, limit)


def _labels(event: AlertEvent, allowed_reserved: Iterable[str], notes: list[str]) -> dict[str, str]:
    allowed = set(allowed_reserved)
    labels = {str(k): str(v) for k, v in event.labels.items()}
    labels.setdefault(RULE_MARKER, event.rule)
    kept: dict[str, str] = {}
    for key, value in labels.items():
        if key.startswith(RESERVED_PREFIXES) and key not in allowed:
            continue  # would reset Flashduty's escalation layers: only the rule author may ask
        if not key:
            continue
        if len(key) > MAX_LABEL_KEY:
            notes.append(f"Label '{_short(key)}' dropped: key longer than {MAX_LABEL_KEY} characters")
            continue
        kept[key] = truncate(value, MAX_LABEL_VALUE)
    order = [k for k in FIRST_LABELS if k in kept] + sorted(k for k in kept if k not in FIRST_LABELS)
    if len(order) > MAX_LABELS:
        dropped = order[MAX_LABELS:]
        names = ", ".join(dropped[:5]) + (", …" if len(dropped) > 5 else "")
        notes.append(f"{len(dropped)} label(s) dropped (Flashduty keeps at most {MAX_LABELS}): {names}")
        order = order[:MAX_LABELS]
    return {k: kept[k] for k in order}


def _unique_alt(alt: str, taken: set[str]) -> str:
    base = truncate(alt, MAX_ALT)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        suffix = f" ({n})"
        candidate = truncate(alt, MAX_ALT - len(suffix)) + suffix
    taken.add(candidate)
    return candidate


RESOLVED_SUFFIX = " (resolved)"


def _images(images: Iterable[ImageRef], notes: list[str], *, resolved: bool = False) -> list[dict[str, str]]:
    """``resolved``: the pictures of an ``Ok`` get their own ``alt`` so that Flashduty, which keeps
    one image per alt on an alert, shows the recovery next to the firing picture, not instead of it."""
    out: list[dict[str, str]] = []
    taken: set[str] = set()
    for i, image in enumerate(images, start=1):
        alt = " ".join(image.alt.split()) or f"Picture {i}"
        if resolved:
            alt = truncate(alt, MAX_ALT - len(RESOLVED_SUFFIX)) + RESOLVED_SUFFIX
        if not image.src or len(image.src) > MAX_SRC:
            notes.append(f"Picture '{_short(alt)}' dropped: image reference longer than {MAX_SRC} characters")
            continue
        item = {"src": image.src, "alt": _unique_alt(alt, taken)}
        if image.href and len(image.href) <= MAX_HREF:
            item["href"] = image.href
        out.append(item)
    return out


def _description(text: str, notes: list[str]) -> str:
    if not notes:
        return truncate(text, MAX_DESCRIPTION)
    tail = "\n".join(notes)
    if not text:
        return truncate(tail, MAX_DESCRIPTION)
    room = MAX_DESCRIPTION - len(tail) - len(NOTES_SEPARATOR)
    if room <= 0:  # the notes alone fill the field: they matter more than the user's text
        return truncate(tail, MAX_DESCRIPTION)
    return truncate(text, room) + NOTES_SEPARATOR + tail


def build_payload(
    event: AlertEvent,
    images: list[ImageRef],
    notes: Iterable[str] = (),
    *,
    allowed_reserved: Iterable[str] = (),
) -> dict[str, Any]:
    """The JSON body of ``POST /event/push/alert/standard`` for ``event``."""
    all_notes = list(notes)
    labels = _labels(event, allowed_reserved, all_notes)
    image_items = _images(images, all_notes, resolved=event.status == "Ok")
    payload: dict[str, Any] = {
        "title_rule": truncate(event.title or event.rule, MAX_TITLE),
        "event_status": event.status,
        "alert_key": event.alert_key,
        "description": _description(event.description, all_notes),
        "labels": labels,
    }
    if image_items:
        payload["images"] = image_items
    return payload
