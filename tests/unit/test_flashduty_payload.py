"""build_payload: Flashduty's field limits, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.flashduty.payload import (
    MAX_DESCRIPTION,
    MAX_LABELS,
    MAX_TITLE,
    ImageRef,
    build_payload,
    truncate,
)
from sidecar.model import AlertEvent, alert_key


def event(**kw: Any) -> AlertEvent:
    labels = kw.pop("labels", {"sidecar_rule": "HighErrorRate", "service": "web"})
    base: dict[str, Any] = {
        "alert_key": alert_key("HighErrorRate", labels),
        "rule": "HighErrorRate",
        "status": "Critical",
        "title": "High error rate on web",
        "description": "5 errors/s",
        "labels": labels,
    }
    base.update(kw)
    return AlertEvent(**base)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "ab…"),
        ("", 3, ""),
        ("日本語テキスト", 4, "日本語…"),  # characters, not bytes
        ("abc", 0, ""),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected
    assert len(truncate(text, limit)) <= limit


def test_basic_fields_and_no_event_time() -> None:
    e = event(event_time=1_700_000_000.0)
    p = build_payload(e, [ImageRef("img_1", "Error rate", "http://grafana/d/x")])
    assert p == {
        "title_rule": "High error rate on web",
        "event_status": "Critical",
        "alert_key": e.alert_key,
        "description": "5 errors/s",
        "labels": {"sidecar_rule": "HighErrorRate", "service": "web"},
        "images": [{"src": "img_1", "alt": "Error rate", "href": "http://grafana/d/x"}],
    }
    assert "event_time" not in p


def test_ok_event_keeps_key_and_status() -> None:
    p = build_payload(event(status="Ok"), [])
    assert p["event_status"] == "Ok" and p["alert_key"].startswith("fds:") and "images" not in p


@pytest.mark.parametrize(
    ("title", "expected_len", "ends_with_ellipsis"),
    [("t" * MAX_TITLE, MAX_TITLE, False), ("t" * (MAX_TITLE + 1), MAX_TITLE, True), ("é" * 5000, MAX_TITLE, True)],
)
def test_title_limit(title: str, expected_len: int, ends_with_ellipsis: bool) -> None:
    got = build_payload(event(title=title), [])["title_rule"]
    assert len(got) == expected_len and got.endswith("…") is ends_with_ellipsis


def test_empty_title_falls_back_to_rule_name() -> None:
    assert build_payload(event(title=""), [])["title_rule"] == "HighErrorRate"


@pytest.mark.parametrize(
    ("description", "notes", "check"),
    [
        ("d" * 2048, [], lambda s: s == "d" * 2048),
        ("d" * 3000, [], lambda s: len(s) == 2048 and s.endswith("…")),
        ("short", ["Picture 'Error rate' missing"], lambda s: s == "short\n\nPicture 'Error rate' missing"),
        ("", ["n1", "n2"], lambda s: s == "n1\nn2"),
        # notes win over the tail of the user's text, and the whole stays within 2048
        ("d" * 3000, ["Picture 'Error rate' missing: capture timed out after 20s"], lambda s: len(s) == 2048
         and s.endswith("\n\nPicture 'Error rate' missing: capture timed out after 20s") and "…" in s),
        ("d" * 100, ["n" * 5000], lambda s: len(s) == 2048 and s.startswith("nnn")),
    ],
)  # fmt: skip
def test_description_and_notes(description: str, notes: list[str], check: Any) -> None:
    got = build_payload(event(description=description), [], notes)["description"]
    assert len(got) <= MAX_DESCRIPTION
    assert check(got), got[-120:]


def test_sidecar_rule_added_when_missing() -> None:
    p = build_payload(event(labels={"service": "web"}), [])
    assert p["labels"] == {"sidecar_rule": "HighErrorRate", "service": "web"}


def test_at_most_50_labels_priority_keys_first_and_deterministic() -> None:
    labels = {f"l{i:03d}": str(i) for i in range(80)}
    labels.update({"severity": "critical", "alertname": "X", "sidecar_rule": "HighErrorRate"})
    p1 = build_payload(event(labels=labels), [])
    p2 = build_payload(event(labels=dict(reversed(list(labels.items())))), [])
    keys = list(p1["labels"])
    assert len(keys) == MAX_LABELS and keys[:3] == ["sidecar_rule", "alertname", "severity"]
    assert keys[3:] == [f"l{i:03d}" for i in range(47)]
    assert p1 == p2
    assert "33 label(s) dropped (Flashduty keeps at most 50): l047, l048" in p1["description"]


@pytest.mark.parametrize(
    ("key", "value", "kept_value", "note"),
    [
        ("k" * 128, "v", "v", None),
        ("k" * 129, "v", None, "dropped: key longer than 128"),
        ("big", "v" * 2048, "v" * 2048, None),
        ("big", "v" * 3000, "v" * 2047 + "…", None),
    ],
)
def test_label_key_and_value_limits(key: str, value: str, kept_value: str | None, note: str | None) -> None:
    p = build_payload(event(labels={"sidecar_rule": "r", key: value}), [])
    assert p["labels"].get(key) == kept_value
    assert (note in p["description"]) if note else ("dropped" not in p["description"])


@pytest.mark.parametrize(
    ("allowed", "kept"),
    [
        (set(), {"sidecar_rule", "team"}),
        ({"layer_person_reset_1"}, {"sidecar_rule", "team", "layer_person_reset_1"}),
    ],
)
def test_reserved_layer_reset_labels_only_when_the_rule_set_them(allowed: set[str], kept: set[str]) -> None:
    labels = {"sidecar_rule": "r", "team": "web", "layer_person_reset_1": "x", "layer_webhook_reset_2": "y"}
    assert set(build_payload(event(labels=labels), [], allowed_reserved=allowed)["labels"]) == kept


@pytest.mark.parametrize(
    ("images", "expected", "note"),
    [
        # distinct, non-empty alts
        (
            [ImageRef("img_a", "Error rate"), ImageRef("img_b", "Error rate"), ImageRef("img_c", "Error rate")],
            [("img_a", "Error rate"), ("img_b", "Error rate (2)"), ("img_c", "Error rate (3)")],
            None,
        ),
        ([ImageRef("img_a", ""), ImageRef("img_b", "  ")], [("img_a", "Picture 1"), ("img_b", "Picture 2")], None),
        # alt ≤ 128 even with a suffix
        (
            [ImageRef("img_a", "a" * 200), ImageRef("img_b", "a" * 200)],
            [("img_a", "a" * 127 + "…"), ("img_b", "a" * 123 + "… (2)")],
            None,
        ),
        # src > 256: dropped with a note
        ([ImageRef("x" * 257, "Big"), ImageRef("img_b", "Ok")], [("img_b", "Ok")], "Picture 'Big' dropped"),
    ],
)
def test_images(images: list[ImageRef], expected: list[tuple[str, str]], note: str | None) -> None:
    p = build_payload(event(), images)
    got = [(i["src"], i["alt"]) for i in p.get("images", [])]
    assert got == expected
    assert all(len(i["alt"]) <= 128 for i in p.get("images", []))
    if note:
        assert note in p["description"]


@pytest.mark.parametrize(("href", "present"), [(None, False), ("h" * 256, True), ("h" * 257, False)])
def test_href_limit(href: str | None, present: bool) -> None:
    (image,) = build_payload(event(), [ImageRef("img_a", "A", href)])["images"]
    assert ("href" in image) is present


def test_ok_pictures_get_their_own_alt_so_the_firing_picture_stays() -> None:
    firing = build_payload(event(), [ImageRef("img_a", "Error rate")])
    resolved = build_payload(event(status="Ok"), [ImageRef("img_b", "Error rate"), ImageRef("img_c", "x" * 200)])
    assert [i["alt"] for i in firing["images"]] == ["Error rate"]
    alts = [i["alt"] for i in resolved["images"]]
    assert alts[0] == "Error rate (resolved)"
    assert alts[1].endswith(" (resolved)") and len(alts[1]) == 128
