"""The CLI contract: exit codes, printed problems, redaction, and `run` as a real process
(readiness, healthcheck subcommand, reload on SIGHUP and on file change, SIGTERM drain)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar_sandbox.runner import Sandboxes, start_sandboxes
from tests.support.browsers import find_chromium
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "FLASHDUTY_INTEGRATION_KEY": "sandbox-integration-key",
    "GRAFANA_TOKEN": "sandbox-grafana-token",
    "WEBHOOK_TOKEN": "cli-test-webhook-secret",
}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHDUTY_", "GRAFANA_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("flashduty: {integration_key: '${NOPE}'}\ncapture: {width: 1, format: bmp}\nextra: 1\n")
    res = cli("check-config", "-c", str(cfg))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "flashduty.integration_key: environment variable NOPE is not set",
        "capture.width: must be ≥ 100 (got 1)",
        "capture.format: must be one of 'png', 'jpeg' or 'webp' (got 'bmp')",
        "extra: unknown key",
        "4 problem(s) in the configuration",
    ]


def test_check_and_print_example_config() -> None:
    env = {"FLASHDUTY_INTEGRATION_KEY": "fd-key-for-print-test", "GRAFANA_TOKEN": "gf-token-for-print-test"}
    ok = cli("check-config", "-c", str(ROOT / "config.example.yaml"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "ok (3 rules, 1 datasources)" in ok.stdout
    printed = cli("print-config", "-c", str(ROOT / "config.example.yaml"), env=env)
    assert printed.returncode == 0
    assert "fd-key-for-print-test" not in printed.stdout and "gf-token-for-print-test" not in printed.stdout
    assert "integration_key: <redacted>" in printed.stdout


def test_config_from_environment_variable(tmp_path: Path) -> None:
    res = cli("check-config", env={"FLASHDUTY_SIDECAR_CONFIG": str(tmp_path / "missing.yaml")})
    assert res.returncode == 2
    assert "missing.yaml: cannot read config file" in res.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    res = cli("healthcheck", "--url", "http://127.0.0.1:9/healthz", "--timeout", "1")
    assert res.returncode == 1
    assert "healthcheck failed" in res.stderr


CONFIG = """
flashduty:
  api_host: {fd}
  integration_key: ${{FLASHDUTY_INTEGRATION_KEY}}
grafana:
  url: {gf}
  token: ${{GRAFANA_TOKEN}}
capture:
  browser_path: ${{SIDECAR_CHROMIUM:-}}
  timeout: 10s
  image_budget: 5s
server:
  listen: 127.0.0.1:{port}
  webhook_token: ${{WEBHOOK_TOKEN}}
  shutdown_grace: 5s
state_dir: {state}
datasources:
  - {{name: prom, url: "{prom}"}}
rules:
  - name: {rule}
    source: prometheus
    expr: sandbox_demo_errors > 5
    every: 1s
    title: "Errors on {{{{ $labels.service }}}}"
    panels: [{{dashboard: sandbox, panel: 1, range: 15m}}]
"""


@pytest.fixture
async def boxes() -> AsyncIterator[Sandboxes]:
    b = await start_sandboxes(query_delay=0.1)
    try:
        yield b
    finally:
        await b.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.chromium
@pytest.mark.slow
async def test_run_process_reload_and_sigterm(tmp_path: Path, boxes: Sandboxes) -> None:
    if find_chromium() is None:
        pytest.skip("no Chromium: install chromium or set SIDECAR_CHROMIUM")
    port = free_port()
    cfg_path = tmp_path / "config.yaml"

    def write(rule: str) -> None:
        cfg_path.write_text(
            CONFIG.format(
                fd=boxes.flashduty_url,
                gf=boxes.grafana_url,
                prom=boxes.prometheus_url,
                port=port,
                state=tmp_path / "state",
                rule=rule,
            )
        )

    write("FirstName")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLASHDUTY_", "GRAFANA_"))}, **SECRETS}
    env["SIDECAR_CHROMIUM"] = find_chromium() or ""
    log_path = tmp_path / "out.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "run", "-c", str(cfg_path), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        health = ["healthcheck", "--url", f"http://127.0.0.1:{port}/readyz", "--timeout", "2"]
        deadline = time.monotonic() + 30
        # in a thread: the sandboxes share this event loop and must keep answering meanwhile
        while (await asyncio.to_thread(cli, *health)).returncode != 0:
            assert time.monotonic() < deadline, "timed out waiting for readyz"
            await asyncio.sleep(0.2)

        boxes.prometheus.value = 12
        await eventually(
            lambda: any(
                a["labels"].get("sidecar_rule") == "FirstName" and a["images"]
                for a in boxes.flashduty.state()["alerts"]
            ),
            "the first alert",
            30,
        )

        # a valid change on disk is picked up (file watcher) without a restart
        write("SecondName")
        assert proc.returncode is None
        await eventually(lambda: "config reloaded" in log_path.read_text(), "the reload", 20)
        await eventually(
            lambda: any(a["labels"].get("sidecar_rule") == "SecondName" for a in boxes.flashduty.state()["alerts"]),
            "the renamed rule's alert",
            30,
        )

        # an invalid change is refused; the daemon keeps running the old config
        cfg_path.write_text(cfg_path.read_text().replace("every: 1s", "every: fast"))
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "config reload refused" in log_path.read_text(), "the refusal", 20)
        assert proc.returncode is None
        ok = await asyncio.to_thread(cli, "healthcheck", "--url", f"http://127.0.0.1:{port}/healthz")
        assert ok.returncode == 0, ok.stderr

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 15)
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = log_path.read_text()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, out  # not a TTY: JSON lines
    assert any(line["msg"].startswith("delivered") for line in lines)
    for secret in SECRETS.values():
        assert secret not in out, f"secret {secret[:6]}… leaked into the logs"


def test_a_missing_dependency_is_one_line_not_a_traceback() -> None:
    # an installation without aiohttp (sys.modules[name] = None makes its import fail as missing)
    code = (
        "import sys; sys.modules['aiohttp'] = None; from sidecar.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "run", "--config", str(ROOT / "config.example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLASHDUTY_INTEGRATION_KEY": "k", "GRAFANA_TOKEN": "t"},
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "missing Python package 'aiohttp'" in r.stderr
