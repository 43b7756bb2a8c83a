"""Loading: config file → YAML → ``${VAR}`` interpolation → ``rule_files`` → schema → cross-checks.

Every stage runs even when an earlier one found problems, so that ``ConfigError`` lists all of
them at once; a value emptied by a missing variable is reported once, as the missing variable.
This is the one place that reads the config file and ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.config.checks import cross_checks
from sidecar.config.env import interpolate
from sidecar.config.messages import ConfigError, validation_problems
from sidecar.config.schema import Config

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "load_config", "parse_config", "resolve_config_path"]

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_ENV = "FLASHDUTY_SIDECAR_CONFIG"


def resolve_config_path(path: str | None, env: Mapping[str, str] | None = None) -> str:
    """``-c PATH``, else ``$FLASHDUTY_SIDECAR_CONFIG``, else ``./config.yaml``."""
    env = os.environ if env is None else env
    return path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate; raise ``ConfigError`` with every problem found."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p}: cannot read config file: {e.strerror or e}"]) from None
    return parse_config(text, env=env, base=p.parent)


def parse_config(text: str, *, env: Mapping[str, str], base: Path | None = None) -> Config:
    """``text`` as a config; ``rule_files`` are found relative to ``base`` (default: the working directory)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping (got {type(raw).__name__})"])
    problems: list[str] = []
    raw = interpolate(raw, (), env, problems)
    own_rules = len(raw["rules"]) if isinstance(raw.get("rules"), list) else 0
    _expand_rule_files(raw, base or Path.cwd(), problems)
    env_paths = {line.split(": ", 1)[0] for line in problems}
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        # a value left empty by a missing variable is reported once, as the missing variable
        lines = validation_problems(e, Config)
        problems.extend(line for line in lines if line.split(": ", 1)[0] not in env_paths)
    problems.extend(cross_checks(raw, cfg, own_rules=own_rules))
    if problems or cfg is None:
        raise ConfigError(problems)
    return cfg


def _expand_rule_files(raw: dict[str, Any], base: Path, problems: list[str]) -> None:
    """Append the alerting rules of every ``rule_files`` entry to ``rules`` (as plain entries)."""
    entries = raw.get("rule_files") or []
    if not isinstance(entries, list):
        return  # reported by the model validation
    rules = raw.setdefault("rules", [])
    if not isinstance(rules, list):
        return  # reported by the model validation
    # imported here: the rules package imports the config schema, which must load first
    from sidecar.rules.files import rules_from_rule_files

    rules.extend(rules_from_rule_files(entries, base, problems))
