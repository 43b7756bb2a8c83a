"""The built image as buildah has it: its config (user, entrypoint, environment, healthcheck),
its size, and its root filesystem mounted from a working container (``buildah from`` +
``buildah mount``). The jail mounts that root read-only; the container is removed afterwards."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any


def _buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class ImageConfig:
    name: str
    size: str  # as buildah reports it (its uncompressed layers, e.g. "1.3 GB")
    user: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    healthcheck: list[str]  # Docker's Test: ["CMD", ...]; empty when the format dropped it
    labels: dict[str, str]

    @classmethod
    def inspect(cls, image: str) -> ImageConfig:
        info: dict[str, Any] = json.loads(_buildah("inspect", "--type", "image", image))
        oci = info.get("OCIv1", {}).get("config", {})
        docker = info.get("Docker", {}).get("config", {}) or {}
        env = dict(e.split("=", 1) for e in oci.get("Env", []) if "=" in e)
        health = (docker.get("Healthcheck") or {}).get("Test") or []
        return cls(
            name=image,
            size=_size(image),
            user=oci.get("User", ""),
            entrypoint=list(oci.get("Entrypoint") or []),
            cmd=list(oci.get("Cmd") or []),
            env=env,
            workdir=oci.get("WorkingDir", "") or "/",
            healthcheck=list(health),
            labels=dict(oci.get("Labels") or {}),
        )


def _size(image: str) -> str:
    rows: list[dict[str, Any]] = json.loads(_buildah("images", "--json", image))
    return str(rows[0]["size"]) if rows else "?"


def tree_bytes(path: str) -> int:
    """The apparent size of the files under ``path`` (a mounted image: its unpacked size)."""
    out = subprocess.run(["du", "-sxb", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


class MountedImage:
    """A working container of ``image`` and its mounted root filesystem (a context manager)."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.container = ""
        self.path = ""

    def __enter__(self) -> MountedImage:
        self.container = _buildah("from", "--pull-never", "--quiet", self.image)
        try:
            self.path = _buildah("mount", self.container)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.container:
            subprocess.run(["buildah", "umount", self.container], capture_output=True, check=False)
            subprocess.run(["buildah", "rm", self.container], capture_output=True, check=False)
            self.container = ""
