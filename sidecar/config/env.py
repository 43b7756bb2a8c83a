"""``${VAR}`` interpolation of the parsed YAML, and the rule that secrets come from the environment.

* ``${VAR}`` is required, ``${VAR:-default}`` optional; an empty variable counts as unset;
* a secret (``SECRET_PATHS``: integration key, app key, Grafana token and password, webhook
  token, UI token, datasource credentials) written literally in the file is an error; an optional secret
  whose variables are all unset becomes ``None``.

The environment is passed in as a mapping: this module never reads ``os.environ`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sidecar.config.messages import format_path

__all__ = ["SECRET_PATHS", "interpolate", "is_secret_path"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

# paths (as tuples with "*" for list indices and dict keys) whose values are secrets
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("flashduty", "integration_key"),
    ("flashduty", "app_key"),
    ("grafana", "token"),
    ("grafana", "basic_auth", "password"),
    ("server", "webhook_token"),
    ("status", "ui_token"),
    ("datasources", "*", "bearer_token"),
    ("datasources", "*", "basic_auth", "password"),
)


def is_secret_path(path: tuple[str | int, ...]) -> bool:
    for pattern in SECRET_PATHS:
        if len(pattern) == len(path) and all(p == "*" or p == q for p, q in zip(pattern, path, strict=True)):
            return True
    return False


def interpolate(node: Any, path: tuple[str | int, ...], env: Mapping[str, str], problems: list[str]) -> Any:
    """``node`` with every ``${VAR}`` replaced; each problem appended to ``problems`` by its path."""
    if isinstance(node, dict):
        return {k: interpolate(v, (*path, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, (*path, i), env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        if is_secret_path(path) and node is not None:
            problems.append(f"{format_path(path)}: secrets must come from the environment: write ${{VAR}}")
        return node
    if is_secret_path(path) and node.strip() and not _ENV_REF.search(node):
        problems.append(f"{format_path(path)}: secrets must come from the environment: write ${{VAR}}")
        return node

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        problems.append(f"{format_path(path)}: environment variable {name} is not set")
        return ""

    out = _ENV_REF.sub(repl, node)
    if is_secret_path(path) and out == "":
        return None  # optional secret left unset
    return out
