"""Run a command of the image as Kubernetes runs the container: the image's root filesystem
read-only, an empty tmpfs on ``/tmp``, the state directory writable, the config directory
read-only (a ConfigMap), a minimal ``/dev`` with a ``/dev/shm`` tmpfs, ``/proc`` of a PID
namespace of its own (the entrypoint is PID 1, as tini is in a pod), as UID/GID 10001 with no
capabilities and no privilege escalation.

The net namespace is the caller's: the prover runs in one of its own with the sandbox on its
loopback, like the pod's shared network namespace with Grafana on ``localhost``.

Tools: ``unshare`` (mount and PID namespaces), ``mount``, ``chroot`` from the host, then the
image's own ``env`` and ``setpriv`` (util-linux, Essential in Debian) to drop to the user.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

UID = GID = 10001
STATE_DIR = "/var/lib/flashduty-sidecar"
CONFIG_DIR = "/etc/flashduty-sidecar"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")

# $1 rootfs, $2 the new root (an empty directory), $3 state dir, $4 config dir, $5 hidden paths
# (colon-separated), $6 the working directory; then the command. Every mount is private to the
# namespace and goes away with it.
_SETUP = r"""
set -eu
R=$1 N=$2 STATE=$3 CONF=$4 HIDE=$5 WD=$6
shift 6
mount --make-rprivate /
mount --bind "$R" "$N"
mount -o remount,bind,ro "$N"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=1g tmpfs "$N/tmp"
mount --bind "$STATE" "$N/var/lib/flashduty-sidecar"
mount --bind "$CONF" "$N/etc/flashduty-sidecar"
mount -o remount,bind,ro "$N/etc/flashduty-sidecar"
mount -t proc -o nosuid,nodev,noexec proc "$N/proc"
mount -t tmpfs -o nosuid,mode=0755,size=1m tmpfs "$N/dev"
for node in @NODES@; do touch "$N/dev/$node"; mount --bind "/dev/$node" "$N/dev/$node"; done
ln -s /proc/self/fd "$N/dev/fd"; ln -s fd/0 "$N/dev/stdin"; ln -s fd/1 "$N/dev/stdout"; ln -s fd/2 "$N/dev/stderr"
mkdir "$N/dev/shm"; mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=256m tmpfs "$N/dev/shm"
mount -o remount,ro,bind "$N/dev"
mount --rbind /sys "$N/sys"; mount -o remount,bind,ro "$N/sys"
if [ -n "$HIDE" ]; then
  IFS=:; for path in $HIDE; do mount -t tmpfs -o ro,size=4k tmpfs "$N$path"; done; unset IFS
fi
exec chroot "$N" "$@"
""".replace("@NODES@", " ".join(DEV_NODES))


@dataclass
class Jail:
    """Where a jailed command runs: the mounted image and the host directories it may use."""

    rootfs: str  # the image's root filesystem (buildah mount)
    scratch: str  # a host directory for the new roots
    state_dir: str  # host directory mounted writable at STATE_DIR
    config_dir: str  # host directory mounted read-only at CONFIG_DIR
    image_env: Mapping[str, str] = field(default_factory=dict)  # the image's ENV
    workdir: str = "/tmp"  # the image's WORKDIR
    _roots: int = 0

    def argv(self, command: Sequence[str], env: Mapping[str, str] | None = None, hide: Sequence[str] = ()) -> list[str]:
        """The host command line that runs ``command`` (absolute, or found on the image's PATH)
        in the jail with the image's environment plus ``env``; ``hide``: paths of the image
        covered by an empty read-only tmpfs (a font that is not there)."""
        self._roots += 1
        new_root = Path(self.scratch) / f"root{self._roots}"
        new_root.mkdir(parents=True, exist_ok=True)
        environment = {**self.image_env, **(env or {})}
        drop = [
            "/usr/bin/setpriv",
            f"--reuid={UID}",
            f"--regid={GID}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
        chdir = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', self.workdir]
        inner = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in environment.items()), *drop, *chdir, *command]
        setup = [self.rootfs, str(new_root), self.state_dir, self.config_dir, ":".join(hide), self.workdir]
        return [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "/bin/sh",
            "-c",
            _SETUP,
            "jail",
            *setup,
            *inner,
        ]

    def run(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        hide: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, env, hide), capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, log: str | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
        try:
            return subprocess.Popen(self.argv(command, env), stdout=out, stderr=subprocess.STDOUT)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]


def namespace_init(jail_process: subprocess.Popen[bytes]) -> int | None:
    """The host PID of PID 1 in the jail (the image's entrypoint): unshare's only child."""
    pid = jail_process.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return None
    return children[0] if children else None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (host PIDs)."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children", encoding="ascii") as f:
                stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (empty when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def prepare_dirs(state_dir: str, config_dir: str) -> None:
    """The state directory owned by the pod's user (an emptyDir with fsGroup), the config
    directory readable by it."""
    os.makedirs(state_dir, exist_ok=True)
    os.chown(state_dir, UID, GID)
    os.chmod(state_dir, 0o750)
    os.makedirs(config_dir, exist_ok=True)
    os.chmod(config_dir, 0o755)
