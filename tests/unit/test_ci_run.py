"""``.ci/run``: the README's test command first, then the image step; the exit status is the
tests' when they fail (the image step never runs), else the image step's; the image step is
skipped, saying why, where it cannot run. Run against a stand-in ``./dev`` that records what it
was asked, in a copy of the repository layout with a PATH that has no apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "sh", "env", "id", "dirname", "timeout", "tail", "unshare", "true", "cat", "printf")


def sandbox(tmp_path: Path, test_rc: int, image_rc: int, buildah: bool) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    calls = tmp_path / "calls"
    dev = repo / "dev"
    dev.write_text(
        f'#!/bin/sh\necho "$1" >> {calls}\n[ "$1" = test ] && exit {test_rc}\n[ "$1" = image ] && exit {image_rc}\nexit 9\n'
    )
    dev.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    if buildah:
        for fake in ("buildah", "mmdebstrap"):
            (bin_dir / fake).write_text("#!/bin/sh\nexit 0\n")
            (bin_dir / fake).chmod(0o755)
    return repo, {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def run(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def test_failing_tests_fail_ci_and_the_image_step_does_not_run(tmp_path: Path) -> None:
    repo, env = sandbox(tmp_path, test_rc=1, image_rc=0, buildah=True)
    done = run(repo, env)
    assert done.returncode == 1
    assert calls(tmp_path) == ["test"]


def test_without_buildah_the_image_step_says_skipped_and_ci_passes(tmp_path: Path) -> None:
    repo, env = sandbox(tmp_path, test_rc=0, image_rc=0, buildah=False)
    done = run(repo, env)
    assert done.returncode == 0, done.stderr
    assert calls(tmp_path) == ["test"]
    # as root (CI) it gets as far as looking for buildah; elsewhere it stops at "not root"
    reason = "buildah or mmdebstrap is not installed" if os.geteuid() == 0 else "not root"
    assert f"SKIPPED: image step: {reason}" in done.stdout, done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the image step runs as root only")
@pytest.mark.parametrize("image_rc", [0, 7])
def test_after_passing_tests_the_image_step_runs_and_its_status_is_ci_s(tmp_path: Path, image_rc: int) -> None:
    repo, env = sandbox(tmp_path, test_rc=0, image_rc=image_rc, buildah=True)
    done = run(repo, env)
    if "SKIPPED" in done.stdout:  # no namespaces on this machine
        pytest.skip(done.stdout.strip().splitlines()[-1])
    assert done.returncode == image_rc, done.stdout + done.stderr
    assert calls(tmp_path) == ["test", "image"]
