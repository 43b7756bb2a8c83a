"""Helpers shared by the tests, imported as ``from tests.support.wait import eventually``.

``tests/conftest.py`` holds fixtures and session hooks only. The repository root is on
``sys.path`` under pytest (``pythonpath = ["."]`` in pyproject.toml); a helper run as a
subprocess is started with ``python -m tests.support.NAME`` from the root (outbox_daemon.py).

* ``wait``: ``eventually``, polling for state that settles in the background;
* ``browsers``: ``find_chromium``, the Chromium the browser tests use (or None: skip);
* ``procs``: real Prometheus and Alertmanager processes;
* ``delivery``: the delivery harness (real outbox, pipeline, client, sandbox Flashduty);
* ``outbox_daemon``: the kill -9 subject of tests/integration/test_kill9.py.
"""
