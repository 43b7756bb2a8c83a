"""Validation and normalisation of a Standard Alert push body (flashduty-api.md 1.2).

What is documented as truncated is truncated (by characters, like Go runes): ``title_rule``
512, ``description`` 2048, label values 2048, image ``alt`` 128 and ``href`` 256. An image whose
``src`` is over 256 characters is silently dropped. Where the doc only states a maximum, the
sandbox is strict so that a client that breaks the rule fails its tests: more than 50 labels, a
label key over 128 characters, or an ``alert_key`` over 255 characters is a 400.

Sandbox choices on UNCONFIRMED points: an image ``src`` must be an ``img_`` key this sandbox
issued or an http(s) URL, otherwise the image is dropped with a warning; an empty
``alert_key`` counts as absent; ``event_time`` must be an integer (Unix seconds) when present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .flashduty_http import invalid_parameter

STATUSES = ("Critical", "Warning", "Info", "Ok")
MAX_TITLE = 512
MAX_DESCRIPTION = 2048
MAX_ALERT_KEY = 255
MAX_LABELS = 50
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 2048
MAX_SRC = 256
MAX_ALT = 128
MAX_HREF = 256


@dataclass(frozen=True)
class ImageRef:
    src: str
    alt: str = ""
    href: str = ""

    def to_json(self) -> dict[str, str]:
        return {"src": self.src, "alt": self.alt, "href": self.href}


@dataclass
class PushedEvent:
    """A push body after validation, truncation and merging of images by ``alt``."""

    event_status: str
    title_rule: str
    description: str | None = None
    alert_key: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    images: list[ImageRef] = field(default_factory=list)
    event_time: int | None = None
    warnings: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Identity for noise-reduction layer 1 (an event identical to the previous one)."""
        return json.dumps(
            [
                self.event_status,
                self.title_rule,
                self.description,
                self.labels,
                [image.to_json() for image in self.images],
                self.event_time,
            ],
            sort_keys=True,
        )


def parse_push(body: Any, *, is_known_image: Callable[[str], bool]) -> PushedEvent:
    if not isinstance(body, dict):
        raise invalid_parameter("request body must be a JSON object")
    title_rule = _string(body, "title_rule")
    if not title_rule:
        raise invalid_parameter("title_rule is required")
    status = body.get("event_status")
    if status not in STATUSES:
        raise invalid_parameter(f"event_status must be one of {', '.join(STATUSES)} (got {status!r})")
    alert_key = _string(body, "alert_key") or None
    if alert_key is not None and len(alert_key) > MAX_ALERT_KEY:
        raise invalid_parameter(f"alert_key is longer than {MAX_ALERT_KEY} characters")
    if status == "Ok" and alert_key is None:
        raise invalid_parameter("alert_key is required when event_status is Ok")
    description = _string(body, "description")
    event = PushedEvent(
        event_status=status,
        title_rule=title_rule[:MAX_TITLE],
        description=None if description is None else description[:MAX_DESCRIPTION],
        alert_key=alert_key,
        labels=_labels(body.get("labels")),
        event_time=_event_time(body.get("event_time")),
    )
    event.images = _images(body.get("images"), is_known_image, event.warnings)
    return event


def _string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_parameter(f"{name} must be a string")
    return value


def _event_time(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_parameter("event_time must be an integer (Unix seconds)")
    return value


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter("labels must be an object of string values")
    if len(value) > MAX_LABELS:
        raise invalid_parameter(f"at most {MAX_LABELS} labels are allowed (got {len(value)})")
    labels: dict[str, str] = {}
    for key, label_value in value.items():
        if not key or len(key) > MAX_LABEL_KEY:
            raise invalid_parameter(f"label keys must be 1 to {MAX_LABEL_KEY} characters")
        if not isinstance(label_value, str):
            raise invalid_parameter(f"label {key[:MAX_LABEL_KEY]!r} must have a string value")
        labels[key] = label_value[:MAX_LABEL_VALUE]
    return labels


def _images(value: Any, is_known_image: Callable[[str], bool], warnings: list[str]) -> list[ImageRef]:
    """Valid images, one per ``alt`` (a later image replaces an earlier one with the same alt)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_parameter("images must be an array")
    by_alt: dict[str, ImageRef] = {}
    for index, item in enumerate(value):
        image = _image(index, item, is_known_image, warnings)
        if image is not None:
            by_alt[image.alt] = image
    return list(by_alt.values())


def _image(index: int, item: Any, is_known_image: Callable[[str], bool], warnings: list[str]) -> ImageRef | None:
    if not isinstance(item, dict):
        raise invalid_parameter(f"images[{index}] must be an object")
    src, alt, href = (_image_field(item, index, name) for name in ("src", "alt", "href"))
    if not src:
        raise invalid_parameter(f"images[{index}].src is required")
    if len(src) > MAX_SRC:
        warnings.append(f"images[{index}]: src longer than {MAX_SRC} characters, image dropped")
        return None
    if src.startswith("img_") and not is_known_image(src):
        warnings.append(f"images[{index}]: {src} is not an image_key issued by this sandbox, image dropped")
        return None
    if not src.startswith(("img_", "http://", "https://")):
        warnings.append(f"images[{index}]: src is neither an image_key nor an http(s) URL, image dropped")
        return None
    return ImageRef(src=src, alt=alt[:MAX_ALT], href=href[:MAX_HREF])


def _image_field(item: Mapping[str, Any], index: int, name: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_parameter(f"images[{index}].{name} must be a string")
    return value


_LABEL_VAR = re.compile(r"\$\{\s*([^}\s]*)\s*\}")
_GO_FIELD = re.compile(r"\{\{\s*\.(\w+)(?:\.(\w+))?\s*\}\}")


def render_title(title_rule: str, context: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """The alert title (flashduty-api.md 1.6): plain text unless prefixed ``[TPL]``; then
    ``${label}`` (missing: ``<no value>``) and ``{{ .Field }}`` / ``{{ .Labels.x }}`` (missing:
    empty). Unknown template fields are left as written."""
    if not title_rule.startswith("[TPL]"):
        return title_rule
    text = _LABEL_VAR.sub(lambda m: labels.get(m.group(1), "<no value>"), title_rule[len("[TPL]") :])

    def go_field(match: re.Match[str]) -> str:
        name, label = match.group(1), match.group(2)
        if name == "Labels" and label is not None:
            return labels.get(label, "")
        return context.get(name, match.group(0)) if label is None else match.group(0)

    return _GO_FIELD.sub(go_field, text)[:MAX_TITLE]
