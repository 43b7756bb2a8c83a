"""The JSON body of a request that pushes alerts: bytes → a decoded document, or ``PayloadError``.

Strict, so that every body that is not a plain JSON document is a 400 with a one-line reason
(never a 500, never half-applied: the handlers decode and validate before they change anything):

* empty, not UTF-8 (a UTF-8 BOM is tolerated, as Go's ``encoding/json`` callers usually strip it);
* nested deeper than ``MAX_DEPTH`` arrays/objects: counted before parsing, without recursion;
* ``NaN``, ``Infinity``, ``-Infinity`` (Python extensions of JSON; RFC 8259 has no such literal),
  and numbers too large for a float (``1e400``) or with more than ``MAX_INT_DIGITS`` digits;
* a lone UTF-16 surrogate escape (``"\\ud800"``), which no UTF-8 writer takes;
* an object with the same key twice (Go keeps the last one silently; we refuse the ambiguity).

The message says what is wrong and where (line, column), and never echoes the body.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .payload import PayloadError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "decode_json"]

MAX_DEPTH = 64
"""Alertmanager's and Grafana's payloads nest 4 levels deep; labels and annotations are flat."""
MAX_INT_DIGITS = 100

# A JSON string (quotes, escapes) or one structural bracket; strings are skipped when counting depth.
# Possessive, and an unclosed string runs to the end: one pass over any body (a backtracking
# pattern re-scanned the rest of the body from every quote of an unclosed string: quadratic).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.?)*+(?:"|\Z)|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Reject(ValueError):
    pass


def decode_json(body: bytes) -> Any:
    """``body`` decoded as JSON; raises ``PayloadError`` with a one-line reason."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if not body.strip():
        raise PayloadError("body: empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"body: not UTF-8 (byte {e.start})") from None
    _check_depth(body)
    try:
        doc = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float, object_pairs_hook=_object)
    except _Reject as e:
        raise PayloadError(f"body: {e}") from None
    except RecursionError:  # not reached below MAX_DEPTH; kept so that no body is ever a 500
        raise PayloadError(f"body: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise PayloadError(f"body: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except ValueError as e:
        raise PayloadError(f"body: not valid JSON: {str(e).splitlines()[0][:200]}") from None
    if _SURROGATE.search(body):
        try:  # "\ud800" alone decodes to a string that no UTF-8 writer (SQLite, Flashduty) takes
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError("body: a string holds a lone UTF-16 surrogate escape") from None
    return doc


def _check_depth(body: bytes) -> None:
    depth = 0
    for m in _TOKEN.finditer(body):
        if len(m[0]) != 1:
            continue  # a string
        if m[0][0] in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                raise PayloadError(f"body: nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _constant(name: str) -> Any:
    raise _Reject(f"{name} is not a JSON number")


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Reject(f"number with more than {MAX_INT_DIGITS} digits")
    return int(s)


def _float(s: str) -> float:
    if len(s) > MAX_INT_DIGITS + 20:
        raise _Reject(f"number with more than {MAX_INT_DIGITS} digits")
    v = float(s)
    if math.isinf(v):
        raise _Reject(f"number out of range ({s[:20]})")
    return v


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject(f"duplicate key {k[:60]!r} in an object")
        out[k] = v
    return out
