"""A parsed ``Config`` back to plain data, for ``print-config`` and logs: durations as strings
(``2m``), each field under its YAML key (``for``, ``from``), every secret as ``<redacted>``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from sidecar.config.schema import Config
from sidecar.config.values import format_duration, is_duration_field
from sidecar.redact import REDACTED

__all__ = ["redacted_dict", "secret_values"]


def redacted_dict(cfg: Config) -> dict[str, Any]:
    """The merged config as plain data, durations as strings, every secret as ``<redacted>``."""
    result = _walk(cfg)
    assert isinstance(result, dict)
    return result


def _walk(node: Any) -> Any:
    if isinstance(node, BaseModel):
        out: dict[str, Any] = {}
        for name, info in type(node).model_fields.items():
            key = info.alias or name
            value = getattr(node, name)
            if is_duration_field(info):
                out[key] = None if value is None else format_duration(value)
            else:
                out[key] = _walk(value)
        return out
    if isinstance(node, SecretStr):
        return REDACTED
    if isinstance(node, list):
        return [_walk(v) for v in node]
    if isinstance(node, dict):
        return {k: _walk(v) for k, v in node.items()}
    return node


def secret_values(cfg: Config) -> list[str]:
    """Every secret the config holds (each ``SecretStr``), for the log redactor."""
    out: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, SecretStr):
            out.append(node.get_secret_value())
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                collect(getattr(node, name))
        elif isinstance(node, list | tuple):
            for v in node:
                collect(v)
        elif isinstance(node, dict):
            for v in node.values():
                collect(v)

    collect(cfg)
    return out
