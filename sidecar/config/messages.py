"""How a config problem is written: ``ConfigError`` and its ``path: message`` lines.

* ``format_path``: ``("rules", 2, "panels", 0, "width")`` → ``rules[2].panels[0].width``;
* ``validation_problems``: a pydantic ``ValidationError`` → one line per problem, in the user's
  words (``must be ≥ 100 (got 0)``), the location cleaned against the schema: a union-branch tag
  that pydantic adds under a union-typed field is dropped, a field is shown by its YAML key
  (``for``, not ``for_``), and a user's own keys (labels, vars) are always kept as written.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "format_path", "validation_problems"]


class ConfigError(Exception):
    """The configuration is invalid. ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isprintable() or not part:  # a key with a newline still makes a one-line problem
            out += f"[{json.dumps(part)}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Every error of ``exc`` (raised validating ``model``) as a ``path: message`` line, duplicates once."""
    seen: set[str] = set()
    problems: list[str] = []
    for err in exc.errors():
        line = f"{format_path(clean_loc(tuple(err['loc']), model))}: {_describe(err)}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def _describe(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {value!r})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {sign} {bound} (got {value!r})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer (got {value!r})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {value!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {value!r})"
    if kind in ("string_type",):
        return f"must be a string (got {value!r})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {type(value).__name__})"
    if kind == "list_type":
        return f"must be a list (got {type(value).__name__})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


# --------------------------------------------------------------------------- locations


def clean_loc(loc: tuple[Any, ...], model: type[BaseModel]) -> tuple[str | int, ...]:
    """Walk ``loc`` alongside the schema of ``model``.

    Pydantic puts a branch tag (``int``, ``str``, ``function-after[...]``) into the location only
    under a field whose type is a union of two or more non-null types; such a tag is dropped, and
    only there. Model fields come out by alias; everything else (list indices, dict keys, unknown
    keys, ``[key]``) is kept as it is.
    """
    out: list[str | int] = []
    cursor: Any = model
    for part in loc:
        cursor = _unwrap(cursor)
        if _is_union(cursor) and isinstance(part, str):
            cursor = _branch(cursor, part)  # a tag: drop it, follow the branch it names
            continue
        if isinstance(cursor, type) and issubclass(cursor, BaseModel) and isinstance(part, str):
            field = _field(cursor, part)
            if field is not None:
                key, cursor = field
                out.append(key)
                continue
            cursor = None  # an unknown key: pydantic goes no deeper
        elif typing.get_origin(cursor) is list and isinstance(part, int):
            cursor = typing.get_args(cursor)[0]
        elif typing.get_origin(cursor) is dict:
            cursor = typing.get_args(cursor)[1]  # part is the user's key
        else:
            cursor = None
        out.append(part)
    return tuple(out)


def _field(model: type[BaseModel], part: str) -> tuple[str, Any] | None:
    """``(YAML key, annotation)`` of the field that ``part`` names (by name or by alias)."""
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            return info.alias or name, info.annotation
    return None


def _unwrap(t: Any) -> Any:
    """``Annotated[X, ...]`` → ``X``; ``X | None`` → ``X`` (pydantic's nullable adds no tag)."""
    while True:
        if typing.get_origin(t) is typing.Annotated:
            t = typing.get_args(t)[0]
            continue
        if _union_args(t) is not None:
            members = [a for a in _union_args(t) or () if a is not type(None)]
            if len(members) == 1:
                t = members[0]
                continue
        return t


def _union_args(t: Any) -> tuple[Any, ...] | None:
    return typing.get_args(t) if typing.get_origin(t) in (typing.Union, types.UnionType) else None


def _is_union(t: Any) -> bool:
    return len([a for a in _union_args(t) or () if a is not type(None)]) >= 2


def _branch(union: Any, tag: str) -> Any:
    """The member of ``union`` that pydantic's tag names (``int``, ``BasicAuth``, ``list[...]``);
    the union itself for a tag that names none (a validator wrapper), so that the next tag goes too."""
    for member in typing.get_args(union):
        inner = _unwrap(member) if member is not type(None) else member
        origin = typing.get_origin(inner) or inner
        name = "none" if inner is type(None) else getattr(origin, "__name__", "")
        if name and (tag.lower() == name.lower() or tag.lower().startswith(name.lower() + "[")):
            return inner
    return union
