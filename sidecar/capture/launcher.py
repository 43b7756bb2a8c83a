"""Launching Chromium: which executable, its flags, a private working directory, and the part
of our environment it may see.

Which executable (``find_browser``): ``capture.browser_path`` when set; else
``$SIDECAR_BROWSER_PATH`` when set (the container image names its browser there,
``configured_browser``); else Debian's
``chromium-headless-shell`` (Chromium's old headless mode as its own binary, same engine: no
browser window per context, so each capture costs less); else ``chromium``, ``chromium-browser``
or ``google-chrome`` on ``PATH``; else None, Playwright's own download. Debian's
``/usr/bin/chromium-headless-shell`` is a wrapper script that starts
``/usr/lib/chromium/chromium-headless-shell`` without ``exec``: the binary is used instead, so
the browser process Playwright talks to is Chromium itself.

Each browser gets a private temp directory (XDG config/cache, TMPDIR, crash dumps) so it runs on
a read-only root filesystem; the directory path doubles as the marker that finds its processes
in ``/proc`` (``proc.py``): to measure memory and to make sure none is left after ``shut_down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass

from playwright.async_api import Browser, Playwright
from playwright.async_api import Error as PlaywrightError

from sidecar.capture.errors import CaptureError, first_line
from sidecar.capture.proc import find_browser_process, reap, session_marker

__all__ = [
    "CHROMIUM_ARGS",
    "CLOSE_TIMEOUT",
    "Chromium",
    "configured_browser",
    "find_browser",
    "headless_shell",
    "is_executable_file",
    "launch",
    "passed_environment",
    "shut_down",
]

CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--mute-audio",
)
CLOSE_TIMEOUT = 10.0  # longest closing a browser or a context may take
DEBIAN_HEADLESS_SHELL = "/usr/lib/chromium/chromium-headless-shell"  # package chromium-headless-shell
HEADLESS_SHELL = "chromium-headless-shell"
BROWSERS_ON_PATH = ("chromium", "chromium-browser", "google-chrome")
BROWSER_PATH_ENV = "SIDECAR_BROWSER_PATH"

# What Chromium may see of our environment: locale, time zone, fonts, proxies, certificates —
# never the sidecar's secrets (Flashduty keys, Grafana token), which also live in the environment.
_PASSED_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH",
        "FONTCONFIG_FILE", "FONTCONFIG_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    }
)  # fmt: skip


# --------------------------------------------------------------------------- which executable


def is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def configured_browser(browser_path: str) -> tuple[str, str] | None:
    """The browser asked for, with where it was asked (for errors): ``capture.browser_path``,
    else ``$SIDECAR_BROWSER_PATH``; None when neither is set."""
    if browser_path:
        return browser_path, "capture.browser_path"
    env = os.environ.get(BROWSER_PATH_ENV, "")
    return (env, f"${BROWSER_PATH_ENV}") if env else None


def find_browser(explicit: str | None = None) -> str | None:
    """``explicit``, else the first Chromium found (see the module docstring), else None."""
    if explicit:
        return explicit
    shell = headless_shell()
    if shell is not None:
        return shell
    return next((found for name in BROWSERS_ON_PATH if (found := shutil.which(name))), None)


def headless_shell() -> str | None:
    """Debian's ``chromium-headless-shell`` binary (see the module docstring), else None."""
    if is_executable_file(DEBIAN_HEADLESS_SHELL):
        return DEBIAN_HEADLESS_SHELL
    found = shutil.which(HEADLESS_SHELL)
    return _unwrapped(found) if found else None


def _unwrapped(path: str) -> str:
    """The binary a wrapper script at ``path`` names (an executable ELF file ending in
    ``chromium-headless-shell``), else ``path`` itself."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return path
    if not head.startswith(b"#!"):
        return path
    for token in head.decode(errors="replace").split():
        token = token.strip("\"'")
        if token.startswith("/") and token.endswith(HEADLESS_SHELL) and is_executable_file(token):
            with open(token, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return token
    return path


# --------------------------------------------------------------------------- launch and close


@dataclass(eq=False)
class Chromium:
    """One launched browser: Playwright's handle, its private directory and its main process."""

    browser: Browser
    workdir: str
    pid: int | None
    user_data_dir: str | None
    session: str | None = None  # proc.session_marker of the main process, taken at launch

    @property
    def markers(self) -> list[str]:
        """What finds every process of this browser (``proc.chromium_processes``): its private
        directories on their command lines, and the session its main process leads."""
        return [m for m in (self.workdir, self.user_data_dir, self.session) if m]


async def launch(playwright: Playwright, *, executable: str | None, sandbox: bool) -> Chromium:
    """Launch a headless Chromium in a fresh private directory; ``CaptureError`` when it fails."""
    workdir = tempfile.mkdtemp(prefix="sidecar-chromium-")
    try:
        return await _launch_in(playwright, workdir, executable, sandbox)
    except BaseException:  # failed or cancelled: leave no directory behind
        shutil.rmtree(workdir, ignore_errors=True)
        raise


async def _launch_in(playwright: Playwright, workdir: str, executable: str | None, sandbox: bool) -> Chromium:
    for sub in ("config", "cache", "tmp", "crash"):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    # no --disk-cache-dir: the headless shell gives that one directory to every browser context
    # (headless/lib/browser/headless_request_context_manager.cc, ConfigureNetworkContextParams-
    # Internal), so the second context Playwright opens cannot open its HTTP cache and every
    # request it does not fulfil itself stalls. Without it each context keeps an in-memory cache;
    # full Chromium puts its profile's cache under XDG_CACHE_HOME (the private directory).
    args = [*CHROMIUM_ARGS, f"--crash-dumps-dir={workdir}/crash"]
    if not sandbox:
        args.append("--no-sandbox")
    env: dict[str, str | float | bool] = {
        **passed_environment(),
        "XDG_CONFIG_HOME": f"{workdir}/config",
        "XDG_CACHE_HOME": f"{workdir}/cache",
        "TMPDIR": f"{workdir}/tmp",
    }
    try:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            chromium_sandbox=sandbox,
            args=args,
            env=env,
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
    except PlaywrightError as e:
        raise CaptureError(f"cannot launch Chromium: {first_line(e)}") from None
    pid, user_data_dir = await asyncio.to_thread(find_browser_process, workdir)
    session = session_marker(pid) if pid else None
    return Chromium(browser=browser, workdir=workdir, pid=pid, user_data_dir=user_data_dir, session=session)


async def shut_down(chromium: Chromium) -> None:
    """Close the browser, kill what is left of its processes, remove its directory."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await chromium.browser.close()
    await asyncio.to_thread(reap, chromium.markers)
    await asyncio.to_thread(shutil.rmtree, chromium.workdir, True)


def passed_environment() -> dict[str, str]:
    """The subset of this process's environment handed to Chromium (see ``_PASSED_ENV``)."""
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
