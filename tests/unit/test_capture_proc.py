"""Finding a browser's processes by its session (the headless shell's children carry no marker
on their command line): real child processes, in their own session and in ours."""

from __future__ import annotations

import os
import subprocess
import sys

from sidecar.capture.proc import chromium_processes, session_marker

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]


def test_a_process_in_its_own_session_is_found_by_it_with_its_children() -> None:
    parent = subprocess.Popen(  # a "browser" that starts a child, as Chromium starts its zygotes
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(30)", *SLEEP],
        start_new_session=True,
    )
    try:
        marker = session_marker(parent.pid)
        assert marker is not None and marker == f"session:{parent.pid}"
        for _ in range(200):
            found = chromium_processes([marker])
            if len(found) == 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert parent.pid in found and len(found) == 2, found
        assert os.getpid() not in found
    finally:
        os.killpg(parent.pid, 9)
        parent.wait()


def test_a_process_in_the_sidecars_own_session_gives_no_session_marker() -> None:
    """Reaping by session there would kill the sidecar's siblings: no marker, command lines only."""
    assert session_marker(os.getpid()) is None
    child = subprocess.Popen(SLEEP)  # same session as this process
    try:
        assert session_marker(child.pid) is None
    finally:
        child.kill()
        child.wait()
    assert session_marker(child.pid) is None  # gone
