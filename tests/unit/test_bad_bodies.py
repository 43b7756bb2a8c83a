"""Every body that is not a valid payload is a 4xx with a one-line reason, on both routes that take
alerts, and nothing of it is applied: no event, no row in the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.ingest.body import MAX_DEPTH, decode_json
from sidecar.ingest.payload import PayloadError
from tests.support.ingest import WEBHOOK_PATH, config, ingest

ALERT = {"status": "firing", "labels": {"alertname": "A", "instance": "i-1"}, "startsAt": "2023-11-14T22:03:20Z"}
GOOD = {"version": "4", "status": "firing", "alerts": [ALERT]}


def deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


BAD: list[tuple[str, bytes, str]] = [
    ("deep nesting", deep(100_000), f"body: nested deeper than {MAX_DEPTH} levels"),
    ("deep nesting in an alert", json.dumps({**GOOD, "x": json.loads(deep(70))}).encode(), "body: nested deeper"),
    ("huge integer", b'{"version": "4", "alerts": [], "n": ' + b"9" * 5000 + b"}", "body: number with more than"),
    ("huge float", b'{"version": "4", "alerts": [], "n": 1e400}', "body: number out of range"),
    ("NaN", b'{"version": "4", "alerts": [], "n": NaN}', "body: NaN is not a JSON number"),
    ("Infinity", b'{"version": "4", "alerts": [], "n": -Infinity}', "body: -Infinity is not a JSON number"),
    ("duplicate key", b'{"version": "4", "version": "1", "alerts": []}', "body: duplicate key 'version'"),
    ("duplicate label", json.dumps(GOOD).replace('"instance"', '"alertname"').encode(), "body: duplicate key"),
    ("bad UTF-8", json.dumps(GOOD).encode().replace(b"i-1", b"i-\xff"), "body: not UTF-8"),
    ("lone surrogate", json.dumps(GOOD).replace("i-1", "\\ud800").encode(), "body: a string holds a lone"),
    ("truncated", json.dumps(GOOD).encode()[:-3], "body: not valid JSON"),
    # an unclosed string of escaped quotes: the depth scan used to re-read the rest of the body from
    # every quote (quadratic: hours for 1 MiB, the event loop blocked); now one pass
    ("unclosed string of escapes", b'"' + b'\\"' * 200_000, "body: not valid JSON: Unterminated string"),
    ("unclosed string ending in a backslash", b'{"a": "' + b"x" * 200_000 + b"\\", "body: not valid JSON"),
    ("label of a wrong type", json.dumps({**GOOD, "alerts": [{**ALERT, "labels": {"a": 1}}]}).encode(), "alerts[0]"),
]


@pytest.mark.parametrize(("case", "body", "reason"), BAD, ids=[b[0] for b in BAD])
def test_the_parser_names_the_problem_on_one_line(case: str, body: bytes, reason: str) -> None:
    if case == "label of a wrong type":
        decode_json(body)  # valid JSON: the payload parser refuses it (below)
        return
    with pytest.raises(PayloadError) as exc:
        decode_json(body)
    assert str(exc.value).startswith(reason) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("case", "body", "reason"), BAD, ids=[b[0] for b in BAD])
async def test_both_routes_answer_400_and_apply_nothing(tmp_path: Path, case: str, body: bytes, reason: str) -> None:
    async with ingest(tmp_path) as h:
        status, text = await h.post(WEBHOOK_PATH, body)
        assert status == 400, text
        message = json.loads(text)["error"]
        assert message.startswith(reason) and "\n" not in message
        am_body = json.dumps([{**ALERT, "labels": {"a": 1}}]).encode() if case == "label of a wrong type" else body
        status, text = await h.post("/api/v2/alerts", am_body)
        assert status == 400, text
        message = json.loads(text)["message"]
        assert "\n" not in message and (reason in message or case == "label of a wrong type"), message
        assert h.events == [] and h.stored() == 0


async def test_oversized_is_413_and_a_valid_body_still_works(tmp_path: Path) -> None:
    async with ingest(tmp_path, config(server={"webhook_max_body": 4096})) as h:
        big = json.dumps({**GOOD, "commonAnnotations": {"x": "y" * 5000}}).encode()
        assert (await h.post(WEBHOOK_PATH, big))[0] == 413
        assert (await h.post("/api/v2/alerts", json.dumps([{**ALERT, "x": "y" * 5000}]).encode()))[0] == 413
        assert h.events == [] and h.stored() == 0
        assert (await h.post(WEBHOOK_PATH, json.dumps(GOOD).encode()))[0] == 200
        assert len(h.events) == 1 and h.stored() == 1


def test_a_valid_body_with_a_bom_and_a_surrogate_pair_decodes() -> None:
    doc = decode_json(b"\xef\xbb\xbf" + json.dumps({"a": "\U0001f525", "n": 1.5, "i": 10**50}).encode())
    assert doc == {"a": "\U0001f525", "n": 1.5, "i": 10**50}


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting() -> None:
    doc = {"a": "[" * 200, "b": '\\"{' * 100 + "\\", "c": [[["ok"]]]}
    assert decode_json(json.dumps(doc).encode()) == doc
