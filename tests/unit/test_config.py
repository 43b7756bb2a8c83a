"""Config: every broken input gives the exact ``path: message`` lines users will read."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config, parse_config, parse_duration, redacted_dict

ENV = {"FD_KEY": "fd-secret-key", "GF_TOKEN": "gf-secret-token"}
BASE = """
flashduty:
  integration_key: ${FD_KEY}
grafana:
  token: ${GF_TOKEN}
datasources:
  - {name: prom, url: "http://prom:9090"}
"""


def problems(extra: str, env: dict[str, str] | None = None, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(base + textwrap.dedent(extra), env=ENV if env is None else env)
    return exc.value.problems


BROKEN: list[tuple[str, str, list[str]]] = [
    ("unknown top-level key", "colour: blue\n", ["colour: unknown key"]),
    ("unknown nested key", "capture: {widht: 10}\n", ["capture.widht: unknown key"]),
    ("width too small", "capture: {width: 0}\n", ["capture.width: must be ≥ 100 (got 0)"]),
    (
        "bad format",
        "capture: {format: gif}\n",
        ["capture.format: must be one of 'png', 'jpeg' or 'webp' (got 'gif')"],
    ),
    (
        "bad duration",
        "capture: {timeout: 10x}\n",
        ["capture.timeout: must be a duration such as 250ms, 30s, 5m, 1h, 1d (got '10x')"],
    ),
    (
        "bare number duration",
        "capture: {image_budget: 15}\n",
        ["capture.image_budget: must be a duration such as 30s, 5m, 1h (got 15)"],
    ),
    ("zero budget", "capture: {image_budget: 0s}\n", ["capture.image_budget: must be > 0"]),
    (
        "bad theme",
        "grafana: {token: '${GF_TOKEN}', theme: blue}\n",
        ["grafana.theme: must be one of 'dark' or 'light' (got 'blue')"],
    ),
    (
        "bad time zone",
        "grafana: {token: '${GF_TOKEN}', timezone: Mars/Olympus}\n",
        ["grafana.timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Paris)"],
    ),
    (
        "bad grafana url",
        "grafana: {url: 'grafana:3000', token: '${GF_TOKEN}'}\n",
        ["grafana.url: must be an http(s) URL (got 'grafana:3000')"],
    ),
    ("bad listen", "server: {listen: '9464'}\n", ["server.listen: must be host:port (got '9464')"]),
    (
        "duplicate rule names",
        """
        rules:
          - {name: A, source: prometheus, expr: up == 0}
          - {name: A, source: prometheus, expr: up == 1}
        """,
        ["rules[1].name: duplicate rule name 'A' (also rules[0])"],
    ),
    (
        "unknown datasource",
        "rules: [{name: A, source: prometheus, datasource: thanos, expr: up == 0}]\n",
        ["rules[0].datasource: unknown datasource 'thanos' (known: prom)"],
    ),
    (
        "prometheus rule without expr",
        "rules: [{name: A, source: prometheus}]\n",
        ["rules[0].expr: required for a prometheus rule"],
    ),
    (
        "bad severity",
        "rules: [{name: A, source: prometheus, expr: up, severity: Fatal}]\n",
        ["rules[0].severity: must be one of 'Critical', 'Warning' or 'Info' (got 'Fatal')"],
    ),
    (
        "bad source",
        "rules: [{name: A, source: loki}]\n",
        ["rules[0].source: must be one of 'prometheus', 'grafana' or 'schedule' (got 'loki')"],
    ),
    (
        "bad cron",
        "rules: [{name: R, source: schedule, cron: '61 * * * *', panels: [{dashboard: d}]}]\n",
        [
            "rules[0].cron: invalid cron expression '61 * * * *': Error validating expression '61': "
            "the last value (61) is higher than the maximum value (59)"
        ],
    ),
    (
        "cron with 6 fields",
        "rules: [{name: R, source: schedule, cron: '0 0 9 * * 1', panels: [{dashboard: d}]}]\n",
        ["rules[0].cron: must have 5 fields (minute hour day month weekday), got '0 0 9 * * 1'"],
    ),
    (
        "schedule without panels, with both cron and every",
        "rules: [{name: R, source: schedule, cron: '0 9 * * *', every: 1h}]\n",
        [
            "rules[0]: a schedule rule needs exactly one of cron or every",
            "rules[0].panels: a schedule rule needs at least one panel to capture",
        ],
    ),
    (
        "panel range and from together",
        "rules: [{name: A, source: prometheus, expr: up, panels: [{dashboard: d, range: 1h, from: now-2h}]}]\n",
        ["rules[0].panels[0]: set either range or from/to, not both"],
    ),
    (
        "panel width out of range, missing dashboard",
        "rules: [{name: A, source: prometheus, expr: up, panels: [{panel: 4, width: 5000}]}]\n",
        ["rules[0].panels[0].dashboard: required", "rules[0].panels[0].width: must be ≤ 3000 (got 5000)"],
    ),
    (
        "bad for",
        "rules: [{name: A, source: prometheus, expr: up, for: soon}]\n",
        ["rules[0].for: must be a duration such as 250ms, 30s, 5m, 1h, 1d (got 'soon')"],
    ),
    (
        "grafana rule with expr",
        "rules: [{name: G, source: grafana, expr: up}]\n",
        ["rules[0].expr: not used by a grafana rule (it mirrors Grafana's own rules)"],
    ),
    (
        "for on a grafana rule and on a schedule rule",
        "rules: [{name: G, source: grafana, for: 5m}, {name: S, source: schedule, every: 1h, for: 1m, panels: [{dashboard: d}]}]\n",
        [
            "rules[0].for: not used by a grafana rule (Grafana's own pending period applies)",
            "rules[1].for: not used by a schedule rule (a report fires when it is due)",
        ],
    ),
    (
        "reserved rule names",
        "rules: [{name: webhook, source: grafana}, {name: alertmanager, source: grafana}]\n",
        [
            "rules[0].name: 'webhook' is reserved for alerts received on the webhook or the Alertmanager API",
            "rules[1].name: 'alertmanager' is reserved for alerts received on the webhook or the Alertmanager API",
        ],
    ),
    # a user's keys that happen to be named like pydantic's union branches (int, str, none) stay in the path
    (
        "label named none",
        "rules: [{name: x, source: schedule, every: 5s, panels: [{dashboard: a}], labels: {none: 1}}]\n",
        ["rules[0].labels.none: must be a string (got 1)"],
    ),
    (
        "label named int",
        "rules: [{name: x, source: schedule, every: 5s, panels: [{dashboard: a}], labels: {int: 1}}]\n",
        ["rules[0].labels.int: must be a string (got 1)"],
    ),
    (
        "panel var named str",
        "rules: [{name: x, source: schedule, every: 5s, panels: [{dashboard: a, vars: {str: [1]}}]}]\n",
        ["rules[0].panels[0].vars.str: must be a string (got [1])"],
    ),
    (
        "label named for_",
        "rules: [{name: x, source: schedule, every: 5s, panels: [{dashboard: a}], labels: {for_: 1, float: 2}}]\n",
        ["rules[0].labels.for_: must be a string (got 1)", "rules[0].labels.float: must be a string (got 2)"],
    ),
    # union-typed fields: pydantic's branch tags (int, str) never show
    (
        "panel: true",
        "webhook: {panels: [{dashboard: a, panel: true}]}\n",
        ["webhook.panels[0].panel: must be a panel id (4) or a Scenes key (panel-4)"],
    ),
    (
        "panel: [1]",
        "rules: [{name: x, source: schedule, every: 5s, panels: [{dashboard: a, panel: [1]}]}]\n",
        [
            "rules[0].panels[0].panel: must be an integer (got [1])",
            "rules[0].panels[0].panel: must be a string (got [1])",
        ],
    ),
    (
        "field given by its python name",
        "rules: [{name: x, source: prometheus, expr: up, for_: soon}]\n",
        ["rules[0].for: must be a duration such as 250ms, 30s, 5m, 1h, 1d (got 'soon')"],
    ),
    (
        "several problems at once",
        """
        capture: {concurrency: 0}
        webhook: {default_severity: loud}
        rules: [{name: A, source: prometheus, expr: up, every: 100ms}]
        """,
        [
            "capture.concurrency: must be ≥ 1 (got 0)",
            "webhook.default_severity: must be one of 'Critical', 'Warning' or 'Info' (got 'loud')",
            "rules[0].every: must be ≥ 1s (got 100ms)",
        ],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), [(c[1], c[2]) for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_messages(extra: str, expected: list[str]) -> None:
    assert problems(extra) == expected


def test_missing_env_var_reported_once_by_path() -> None:
    assert problems("", env={"GF_TOKEN": "x"}) == ["flashduty.integration_key: environment variable FD_KEY is not set"]


def test_empty_env_var_counts_as_unset() -> None:
    assert problems("", env={"FD_KEY": "", "GF_TOKEN": "x"}) == [
        "flashduty.integration_key: environment variable FD_KEY is not set"
    ]


def test_literal_secret_is_refused() -> None:
    base = "flashduty:\n  integration_key: abc123\n"
    assert problems("", base=base) == [
        "flashduty.integration_key: secrets must come from the environment: write ${VAR}"
    ]


def test_env_defaults_and_optional_secrets() -> None:
    text = BASE + "state_dir: ${STATE:-/tmp/x}\nflashduty_extra: 1\n"
    with pytest.raises(ConfigError):
        parse_config(text, env=ENV)
    cfg = parse_config(BASE + "state_dir: ${STATE:-/tmp/x}\n", env=ENV)
    assert cfg.state_dir == "/tmp/x"
    assert cfg.flashduty.app_key is None
    assert cfg.flashduty.integration_key.get_secret_value() == "fd-secret-key"
    cfg2 = parse_config(BASE + "state_dir: ${STATE:-/tmp/x}\n", env={**ENV, "STATE": "/srv/state"})
    assert cfg2.state_dir == "/srv/state"


def test_not_a_mapping_and_bad_yaml() -> None:
    with pytest.raises(ConfigError) as e1:
        parse_config("- a\n- b\n", env=ENV)
    assert e1.value.problems == ["(top level): must be a mapping (got list)"]
    with pytest.raises(ConfigError) as e2:
        parse_config("a: [1,\n", env=ENV)
    assert e2.value.problems[0].startswith("line 2, column 1: invalid YAML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml", env=ENV)
    assert e.value.problems == [f"{tmp_path / 'nope.yaml'}: cannot read config file: No such file or directory"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("0", 0),
        (0, 0),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5.5s", "m", "5 m", "-5s", True, None, "30sec"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


def test_example_config_is_valid_and_redacted() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {"FLASHDUTY_INTEGRATION_KEY": "fd-example-key", "GRAFANA_TOKEN": "gf-example-token"}
    cfg = load_config(root / "config.example.yaml", env=env)
    assert [r.name for r in cfg.rules] == ["HighErrorRate", "grafana-managed", "daily-overview"]
    assert cfg.rules[0].for_ == 120 and cfg.rules[0].severity == "Critical"
    assert cfg.rules[0].panels[0].panel_key == "4"
    dumped = repr(redacted_dict(cfg))
    assert "fd-example-key" not in dumped and "gf-example-token" not in dumped
    assert redacted_dict(cfg)["flashduty"]["integration_key"] == "<redacted>"
    assert redacted_dict(cfg)["rules"][0]["for"] == "2m"


def test_rule_files_become_rules(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(
        textwrap.dedent(
            """
            groups:
              - name: g
                interval: 15s
                labels: {team: db}
                rules:
                  - record: job:up:sum
                    expr: sum(up)
                  - alert: DiskFull
                    expr: disk_free < 0.1
                    for: 5m
                    labels: {severity: critical}
                    annotations:
                      summary: "Disk full on {{ $labels.instance }}"
                      grafana_dashboard_uid: nodes
                      grafana_panel_id: "3,7"
            """
        )
    )
    cfg_text = BASE + f"rule_files: ['{tmp_path}/*.yml']\n"
    cfg = parse_config(cfg_text, env=ENV, base=tmp_path)
    (rule,) = cfg.rules
    assert rule.name == "DiskFull" and rule.source == "prometheus" and rule.severity == "Critical"
    assert rule.every == 15 and rule.for_ == 300 and rule.labels == {"team": "db", "severity": "critical"}
    assert [(p.dashboard, p.panel_key) for p in rule.panels] == [("nodes", "3"), ("nodes", "7")]
    assert rule.title == "Disk full on {{ $labels.instance }}"


def test_rule_files_no_match(tmp_path: Path) -> None:
    assert problems(f"rule_files: ['{tmp_path}/none/*.yml']\n") == [
        f"rule_files[0].path: no file matches '{tmp_path}/none/*.yml'"
    ]


def test_rule_files_panels_grafana_fallbacks_and_bad_ids(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(
        textwrap.dedent(
            """
            groups:
              - name: g
                rules:
                  - alert: Whole
                    expr: up == 0
                    annotations: {__dashboardUid__: nodes}
                  - alert: Two
                    expr: up == 0
                    annotations: {__dashboardUid__: nodes, __panelId__: "2, panel-5"}
            """
        )
    )
    cfg = parse_config(BASE + "rule_files: [alerts.yml]\n", env=ENV, base=tmp_path)
    assert [[(p.dashboard, p.panel_key) for p in r.panels] for r in cfg.rules] == [
        [("nodes", None)],
        [("nodes", "2"), ("nodes", "panel-5")],
    ]
    (tmp_path / "alerts.yml").write_text(
        "groups: [{name: g, rules: [{alert: A, expr: up, annotations: {grafana_dashboard_uid: d, grafana_panel_id: 'bad id!'}}]}]\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + "rule_files: [alerts.yml]\n", env=ENV, base=tmp_path)
    assert exc.value.problems == [
        "rule_files[0]: alerts.yml groups[0].rules[0]: grafana_panel_id: "
        "must be a panel id (4) or a Scenes key (panel-4), got 'bad id!'"
    ]
