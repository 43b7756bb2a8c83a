"""Which Chromium the sidecar runs (``launcher.find_browser``) and what of our environment it sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.capture import launcher
from sidecar.capture.launcher import configured_browser, find_browser, is_executable_file, passed_environment

ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57


def executable(path: Path, content: bytes = ELF) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def no_browsers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH directory and no Debian headless shell: add what a test needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(launcher, "DEBIAN_HEADLESS_SHELL", str(tmp_path / "lib" / "chromium-headless-shell"))
    return bin_dir


def test_an_explicit_path_is_used_as_given(no_browsers: Path) -> None:
    executable(no_browsers / "chromium")
    assert find_browser("/opt/chrome/chrome") == "/opt/chrome/chrome"  # start() checks it exists


def test_nothing_found_means_playwrights_own_browser(no_browsers: Path) -> None:
    assert find_browser() is None
    assert find_browser("") is None


def test_browsers_on_path_in_order(no_browsers: Path) -> None:
    chrome = executable(no_browsers / "google-chrome")
    assert find_browser() == chrome
    browser = executable(no_browsers / "chromium-browser")
    assert find_browser() == browser
    chromium = executable(no_browsers / "chromium")
    assert find_browser() == chromium


def test_debians_headless_shell_binary_comes_first(no_browsers: Path) -> None:
    executable(no_browsers / "chromium")
    shell = executable(Path(launcher.DEBIAN_HEADLESS_SHELL))
    assert find_browser() == shell


def test_a_headless_shell_wrapper_on_path_is_replaced_by_the_binary_it_runs(no_browsers: Path, tmp_path: Path) -> None:
    executable(no_browsers / "chromium")
    binary = executable(tmp_path / "elsewhere" / "chromium-headless-shell")
    # Debian's /usr/bin/chromium-headless-shell, pointing at our binary
    wrapper = executable(no_browsers / "chromium-headless-shell", f'#!/bin/sh -e\n\n{binary} "$@"\n'.encode())
    assert find_browser() == binary
    Path(binary).unlink()  # the wrapper names nothing usable: run the wrapper itself
    assert find_browser() == wrapper


def test_is_executable_file(tmp_path: Path) -> None:
    assert is_executable_file(executable(tmp_path / "x"))
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    assert not is_executable_file(str(plain))
    assert not is_executable_file(str(tmp_path))  # a directory
    assert not is_executable_file("/nonexistent")


def test_chromium_sees_locale_and_proxies_but_not_our_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHDUTY_INTEGRATION_KEY", "secret")
    monkeypatch.setenv("GRAFANA_TOKEN", "secret")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    env = passed_environment()
    assert env["LC_TIME"] == "C.UTF-8" and env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "FLASHDUTY_INTEGRATION_KEY" not in env and "GRAFANA_TOKEN" not in env


def test_sidecar_browser_path_is_used_when_browser_path_is_empty(
    no_browsers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(Path(launcher.DEBIAN_HEADLESS_SHELL))
    image_browser = executable(tmp_path / "image" / "browser")
    monkeypatch.delenv("SIDECAR_BROWSER_PATH", raising=False)
    assert configured_browser("") is None
    monkeypatch.setenv("SIDECAR_BROWSER_PATH", image_browser)
    assert configured_browser("") == (image_browser, "$SIDECAR_BROWSER_PATH")
    assert configured_browser("/opt/chrome/chrome") == ("/opt/chrome/chrome", "capture.browser_path")
    monkeypatch.setenv("SIDECAR_BROWSER_PATH", "")
    assert configured_browser("") is None
