"""At-least-once across ``kill -9``: a daemon killed in the middle of a burst loses nothing.

``tests/support/outbox_daemon.py`` (a subprocess) enqueues N alert events and delivers them to
the Flashduty sandbox running in this test process (time_scale=10 on both sides); it is
SIGKILLed once some, but not all, alerts have reached the sandbox, while other events are
claimed (leased) and in flight. Restarted on the same state_dir without enqueuing anything, it
must release those leases and deliver every remaining event: every alert_key reaches the
sandbox at least once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from sidecar.delivery.outbox import Outbox
from sidecar_sandbox.flashduty import FlashdutySandbox
from tests.support.delivery import APP_KEY, KEY, event
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
DAEMON = "tests.support.outbox_daemon"  # run as a module from ROOT: it imports tests.support.delivery
N = 40
RULE = "Kill9"


async def spawn(state_dir: Path, url: str, log: Path, *extra: str) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", DAEMON, str(state_dir), url, str(N), *extra, stdout=out, stderr=out, cwd=ROOT
        )


async def test_kill9_in_the_middle_of_a_burst_loses_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = {event(i, rule=RULE).alert_key for i in range(N)}
    sandbox = FlashdutySandbox(integration_keys=(KEY,), app_keys=(APP_KEY,), time_scale=10)
    async with sandbox.serve() as url:
        first = await spawn(state, url, tmp_path / "run1.log", "--enqueue")
        try:
            await eventually(lambda: sandbox.stats["push"].processed >= 8, "the burst to start", 30)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        assert first.returncode == -signal.SIGKILL
        before = {a.alert_key for a in sandbox.alerts}
        assert 0 < len(before & keys) < N, "the kill did not land in the middle of the burst"

        outbox = Outbox.in_dir(state)
        leased, pending = outbox.in_flight_count(), outbox.pending_count()
        outbox.close()
        assert pending >= N - len(before & keys)  # delivered but not acked: sent again
        assert leased > 0, "nothing was in flight at the kill"

        second = await spawn(state, url, tmp_path / "run2.log")
        rc = await asyncio.wait_for(second.wait(), 30)
        log = (tmp_path / "run2.log").read_text()
        assert rc == 0, log
        assert f"leases {leased}" in log and "drained" in log

        delivered = {a.alert_key for a in sandbox.alerts}
        assert keys <= delivered, f"lost {len(keys - delivered)} alert(s)"
        outbox = Outbox.in_dir(state)
        assert outbox.pending_count() == 0 and outbox.dead_letter_count() == 0
        outbox.close()
