"""Every template of the config is compiled when the config is read (check-config, start, reload):
a syntax error names its YAML path and is a ``ConfigError`` (exit 2), not a surprise at 3 AM."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config, parse_config
from sidecar.metrics import Metrics
from sidecar.reload import Current, Reloader

ENV = {"KEY": "template-test-key"}
BASE = "flashduty: {integration_key: '${KEY}'}\ngrafana: {timezone: UTC}\n"
RULE = "rules:\n  - name: r\n    source: schedule\n    every: 1m\n    panels: [{dashboard: d, panel: 1, vars: {host: '{{ $labels.host }}'}}]\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, env=ENV)
    return exc.value.problems


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("    title: '{{ $labels.service '\n", "rules[0].title"),
        ("    description: '{% if value %}high'\n", "rules[0].description"),
        ("    labels: {team: '{{ labels.team | }}'}\n", "rules[0].labels.team"),
        ("    annotations: {runbook: '{{ 1 + }}'}\n", "rules[0].annotations.runbook"),
    ],
)
def test_a_rule_template_syntax_error_names_its_path(extra: str, path: str) -> None:
    (line,) = problems(BASE + RULE + extra)
    assert line.startswith(f"{path}: template syntax error: ")


def test_an_unclosed_block_says_so() -> None:
    (line,) = problems(BASE + RULE + "    title: '{{ $labels.service '\n")
    assert line.startswith("rules[0].title: template syntax error: a {{ without its }} ("), line


def test_panel_vars_and_webhook_panel_vars_are_checked() -> None:
    text = (
        BASE
        + RULE.replace("{{ $labels.host }}", "{{ $labels.host")
        + ("webhook: {panels: [{dashboard: d, vars: {x: '{{ ) }}'}}]}\n")
    )
    got = problems(text)
    assert [p.split(":")[0] for p in got] == ["rules[0].panels[0].vars.host", "webhook.panels[0].vars.x"]


def test_valid_templates_in_both_spellings_pass() -> None:
    cfg = parse_config(
        BASE + RULE + "    title: '{{ $labels.service }} at {{ humanize $value }}'\n"
        "    description: '{{ printf \"%.2f\" $value }} {{ value | humanizePercentage }}'\n",
        env=ENV,
    )
    assert cfg.rules[0].title is not None


def test_a_rule_file_template_error_names_the_file_and_rule(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(
        textwrap.dedent(
            """
            groups:
              - name: g
                rules:
                  - alert: DiskFull
                    expr: disk_free < 0.1
                    annotations:
                      summary: "Disk full on {{ $labels.instance "
            """
        )
    )
    (line,) = problems(
        BASE + "datasources: [{name: p, url: 'http://p:9090'}]\n" + f"rule_files: ['{tmp_path}/*.yml']\n"
    )
    assert line.startswith(
        "rule_files[0]: alerts.yml groups[0].rules[0].annotations.summary: template syntax error: "
    ), line


def test_check_config_and_run_exit_2_naming_the_template(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BASE + f"state_dir: {tmp_path / 'state'}\n" + RULE + "    title: '{{ $labels.service '\n")
    env = {"PATH": "/usr/bin:/bin", "KEY": "template-test-key"}
    for command in ("check-config", "run"):
        res = subprocess.run(
            [sys.executable, "-m", "sidecar", command, "-c", str(cfg)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert res.returncode == 2, (command, res.stderr)
        assert "rules[0].title: template syntax error: " in res.stderr, res.stderr


async def test_a_reload_with_a_broken_template_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY", "template-test-key")
    path = tmp_path / "config.yaml"
    path.write_text(BASE + RULE)
    current = Current(load_config(path))
    running = current.config
    reloader = Reloader(current, config_path=str(path), metrics=Metrics())
    path.write_text(BASE + RULE + "    title: '{{ $labels.service '\n")
    assert not await reloader.reload("test")
    assert current.config is running
    assert reloader.last is not None and "rules[0].title: template syntax error" in reloader.last[1]
