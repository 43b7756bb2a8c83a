"""Error taxonomy and redaction (pure; the HTTP side is in test_flashduty_client.py)."""

from __future__ import annotations

import pytest

from sidecar.flashduty.errors import (
    FlashdutyAuthError,
    FlashdutyConnectionError,
    FlashdutyError,
    FlashdutyRateLimited,
    FlashdutyTimeout,
    is_retryable_status,
    redact,
)

KEY = "fd-int-5ecret-0123456789"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (405, False),
        (408, True),
        (413, False),
        (429, True),
        (500, True),
        (501, False),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"http://h/push/image/upload?integration_key={KEY}",
            "http://h/push/image/upload?integration_key=<redacted>",
        ),
        (f"url='http://h/alert/list?app_key={KEY}&x=1'", "url='http://h/alert/list?app_key=<redacted>&x=1'"),
        (f"?a=1&integration_key={KEY}&b=2", "?a=1&integration_key=<redacted>&b=2"),
        (f"Integration_Key%3D{KEY}", "Integration_Key%3D<redacted>"),
        (f"the key {KEY} leaked in prose", "the key <redacted> leaked in prose"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text, [KEY]) == expected


def test_redact_ignores_empty_and_tiny_secrets() -> None:
    assert redact("a b c", ["", None, "b"]) == "a b c"


def test_messages_are_redacted_even_without_the_secret_list() -> None:
    e = FlashdutyConnectionError(f"Cannot connect: http://h/x?integration_key={KEY}", endpoint="push")
    assert KEY not in str(e) and KEY not in repr(e) and all(KEY not in str(a) for a in e.args)


def test_hierarchy_and_retry_flags() -> None:
    auth = FlashdutyAuthError("integration_key rejected", endpoint="upload")
    limited = FlashdutyRateLimited("slow down", endpoint="push", retry_after=2.0)
    errors = [auth, limited, FlashdutyTimeout("t", endpoint="push"), FlashdutyConnectionError("c", endpoint="push")]
    assert all(isinstance(e, FlashdutyError) for e in errors)
    assert [e.retryable for e in errors] == [False, True, True, True]
    assert auth.status == 401 and limited.status == 429 and limited.retry_after == 2.0


def test_str_carries_status_code_and_request_id() -> None:
    e = FlashdutyError("HTTP 500", endpoint="push", status=500, code="InternalError", request_id="abc", retryable=True)
    assert str(e) == "push: HTTP 500 status=500 code=InternalError request_id=abc"
