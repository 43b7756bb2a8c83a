"""Chromium's processes, found in ``/proc`` by a marker on their command line or by their
session (no psutil).

Each browser gets a private temp directory that appears on the command line of its main process
(and, with full Chromium, of every process it starts); that path is a marker used to measure
their memory and to make sure none is left after a browser is closed. The headless shell's
zygotes, renderers and GPU process carry no such flag: they are found by their session instead
(``session_marker``): Playwright starts the browser in a session of its own (``detached``), which
its children keep even once orphaned. Not Linux: nothing is found, nothing is measured or reaped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable

__all__ = [
    "chromium_processes",
    "find_browser_process",
    "process_memory_bytes",
    "read_kb",
    "reap",
    "session_marker",
]

_SESSION = "session:"

log = logging.getLogger("sidecar.capture")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def session_marker(pid: int) -> str | None:
    """A marker for every process in the session of ``pid`` (a browser's main process); None
    when it is gone."""
    session = _session(pid)
    if not session or session == _session(os.getpid()):  # a browser not started in its own session:
        return None  # its session is the sidecar's, whose other processes are not the browser's
    return f"{_SESSION}{session}"


def _session(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[3])  # pid (comm) state ppid pgrp session
    except (OSError, ValueError, IndexError):
        return None


def chromium_processes(markers: Iterable[str]) -> list[int]:
    """PIDs of live processes whose command line contains one of ``markers``, or that are in a
    session named by one (``session_marker``)."""
    wanted = [m for m in markers if m and not m.startswith(_SESSION)]
    sessions = {int(m[len(_SESSION) :]) for m in markers if m.startswith(_SESSION)}
    if not wanted and not sessions:
        return []
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux: nothing to measure or reap
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        cmd = _cmdline(int(entry))  # empty: a kernel thread, or gone
        if cmd and (any(m in cmd for m in wanted) or (sessions and _session(int(entry)) in sessions)):
            found.append(int(entry))
    return found


def process_memory_bytes(pids: Iterable[int]) -> int:
    """Memory of ``pids`` together: the sum of their PSS (processes that are gone count 0).

    PSS splits shared pages between the processes that map them. Summing ``VmRSS`` instead
    counts Chromium's binary and libraries once per process: about 2.6× too much for an idle
    browser (880 MB of VmRSS for 340 MB of PSS), which would recycle a healthy browser. Kernels
    without ``smaps_rollup`` (< 4.14) fall back to ``VmRSS``.
    """
    total = 0
    for pid in pids:
        value = read_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
        if value is None:
            value = read_kb(f"/proc/{pid}/status", "VmRSS:")
        total += (value or 0) * 1024
    return total


def read_kb(path: str, key: str) -> int | None:
    """The kB figure of the line starting with ``key`` in a ``/proc`` file; None if unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def find_browser_process(marker: str) -> tuple[int | None, str | None]:
    """The main browser process (no ``--type=``) carrying ``marker``, and its user-data-dir."""
    for pid in chromium_processes([marker]):
        args = _cmdline(pid).split(" ")
        if any(a.startswith("--type=") for a in args) or "crashpad" in args[0]:
            continue
        udd = next((a.split("=", 1)[1] for a in args if a.startswith("--user-data-dir=")), None)
        return pid, udd
    return None, None


def reap(markers: list[str], grace: float = 1.0, wait: float = 2.0) -> None:
    """Wait ``grace`` for a closed browser's processes to exit, then SIGKILL what is left
    (renderers, zygotes, crashpad handlers) and wait until it is gone."""
    start = time.monotonic()
    left = chromium_processes(markers)
    while left and time.monotonic() - start < grace + wait:
        if time.monotonic() - start >= grace:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        left = chromium_processes(markers)
    if left:
        log.warning("%d Chromium process(es) did not exit: %s", len(left), left)
