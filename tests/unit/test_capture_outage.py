"""The browser's outage record (``capture.outage``): how long it is down, the back-off, one warning."""

from __future__ import annotations

import logging

import pytest

from sidecar.capture.errors import CaptureClass, CaptureError
from sidecar.capture.outage import Outage


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_failed_launches_back_off_2_4_8_16_then_30s_and_say_why() -> None:
    outage = Outage(FakeClock())
    delays = []
    for _ in range(7):
        outage.launch_failed("cannot launch Chromium: boom")
        delays.append(outage.backoff())
    assert delays == [0.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # the first retry at once
    with pytest.raises(CaptureError) as info:
        outage.check()
    assert str(info.value) == "browser unavailable: cannot launch Chromium: boom"
    assert info.value.cls is CaptureClass.ERROR


def test_down_for_counts_from_the_first_failure_until_a_launch() -> None:
    clock = FakeClock()
    outage = Outage(clock)
    assert outage.down_for() == 0.0
    outage.check()  # nothing failed: no error
    outage.launch_failed("cannot launch Chromium: boom")
    clock.now += 30
    outage.launch_failed("cannot launch Chromium: boom")  # still the same outage
    clock.now += 60
    assert outage.down_for() == 90.0
    outage.launched()
    assert outage.down_for() == 0.0
    outage.check()


def test_a_crash_starts_an_outage_and_only_a_crash_before_any_capture_grows_the_streak() -> None:
    clock = FakeClock()
    outage = Outage(clock)
    outage.crashed(captures=0)
    outage.crashed(captures=0)
    assert outage.backoff() == 2.0  # a browser that keeps dying at once
    clock.now += 5
    assert outage.down_for() == 5.0
    outage.check()  # a crash alone does not fail captures: the relaunch is under way
    outage.crashed(captures=12)  # it had worked: relaunch at once
    assert outage.backoff() == 0.0


def test_one_warning_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sidecar.capture")
    outage = Outage(FakeClock())
    for _ in range(3):
        outage.launch_failed("cannot launch Chromium: boom")
    outage.launched()
    outage.launch_failed("cannot launch Chromium: again")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and warnings[0].startswith("cannot launch Chromium: boom; retrying")
    assert any(r.getMessage().startswith("browser available again") for r in caplog.records)
