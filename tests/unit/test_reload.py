"""The one reload path: serialised, applied whole or refused whole, the watcher's view of the
files (config and rule files) recorded by whichever reload ran last."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.config import load_config
from sidecar.metrics import Metrics
from sidecar.reload import Current, Reloader, changed_keys, needs_restart

BASE = "flashduty: {integration_key: '${KEY}'}\nstate_dir: /tmp/x\n"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEY", "reload-test-key")
    path = tmp_path / "config.yaml"
    path.write_text(BASE)
    return path


async def test_reloads_run_one_at_a_time_and_apply_everything(config: Path) -> None:
    current = Current(load_config(config))
    reloader = Reloader(current, config_path=str(config), metrics=Metrics())
    running, overlaps, seen = [0], [0], []

    async def slow_apply(cfg: object) -> None:
        running[0] += 1
        overlaps[0] = max(overlaps[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        seen.append(cfg)

    reloader.add("slow", slow_apply)
    config.write_text(BASE + "delivery: {workers: 3}\n")
    results = await asyncio.gather(*(reloader.reload(f"r{i}") for i in range(3)))
    assert results == [True, True, True]
    assert overlaps[0] == 1, "two reloads applied at once"
    assert current.config.delivery.workers == 3 and len(seen) == 3


async def test_a_restart_only_change_refuses_everything(config: Path) -> None:
    current = Current(load_config(config))
    reloader = Reloader(current, config_path=str(config), metrics=Metrics())
    applied: list[object] = []
    reloader.add("any", applied.append)
    running = current.config
    config.write_text(BASE + "delivery: {workers: 3}\ncapture: {concurrency: 5}\n")
    assert not await reloader.reload("test")
    assert current.config is running and applied == []
    assert reloader.last is not None and reloader.last[0] == "restart_required"
    assert "capture.concurrency" in reloader.last[1]


def test_changed_keys_name_leaves_and_the_restart_table_covers_sections(config: Path) -> None:
    old = load_config(config)
    config.write_text(BASE + "grafana: {theme: light, org_id: 2}\n")
    new = load_config(config)
    assert changed_keys(old, new) == ["grafana.org_id", "grafana.theme"]
    assert needs_restart("grafana.org_id") and not needs_restart("grafana.theme")
    assert needs_restart("flashduty.upload_rate") and not needs_restart("rules")
