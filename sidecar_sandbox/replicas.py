"""Several ``flashduty-sidecar run`` processes as replicas of one Grafana, against the sandboxes.

For the HA tests and benchmark: the emulators (Flashduty, Grafana, Prometheus, the Lease API) run
in the caller's event loop; every replica is a real process (``python -m sidecar run``) with its
own ``state_dir`` and port, ``POD_NAME`` as its identity and a kubeconfig pointing at the Lease
emulator (``KUBECONFIG``, read as kubectl reads it). Who sent what to Flashduty is read from the
sandbox's access log: an HA replica names itself in its User-Agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sidecar_sandbox.kube_leases import KubeLeaseSandbox
from sidecar_sandbox.runner import Sandboxes, start_sandboxes

__all__ = ["Cluster", "ReplicaProc", "cluster"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ReplicaProc:
    name: str
    port: int
    state_dir: Path
    log_path: Path
    env: dict[str, str]
    config: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sidecar", "run", "-c", str(self.config),
                env=self.env, stdout=log, stderr=log, cwd=ROOT,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        await self.proc.wait()

    async def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def metric(self, name: str, timeout: float = 2.0) -> float | None:
        """The value of an unlabelled metric on the replica's /metrics (None: not answering)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
                s.get(self.url + "/metrics") as r,
            ):
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    boxes: Sandboxes
    kube: KubeLeaseSandbox
    replicas: list[ReplicaProc] = field(default_factory=list)

    def by_name(self, name: str) -> ReplicaProc:
        return next(r for r in self.replicas if r.name == name)

    def holder(self) -> str:
        """The Lease's holderIdentity right now ("" when none)."""
        objs = list(self.kube.store._objects.values())
        return str(objs[0]["spec"].get("holderIdentity") or "") if objs else ""

    def sent(self, endpoint: str | None = None, since: float = 0.0) -> list[tuple[float, str, str, int]]:
        """Flashduty requests as (wall time, endpoint, replica name, status)."""
        out = []
        for at, ep, agent, status in self.boxes.flashduty.access_log:
            if at >= since and (endpoint is None or ep == endpoint):
                name = agent.rsplit("(replica ", 1)[-1].rstrip(")") if "(replica " in agent else agent
                out.append((at, ep, name, status))
        return out

    async def wait_leader(self, timeout: float = 30.0, besides: str | None = None) -> ReplicaProc:
        """The replica that holds the Lease and reports itself leading."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.holder()
            if name and name != besides:
                rep = self.by_name(name)
                if rep.alive and await rep.metric("flashduty_sidecar_leader") == 1.0:
                    return rep
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no leader within {timeout}s (holder {self.holder()!r})")


@contextlib.asynccontextmanager
async def cluster(
    tmp: Path, config: str, *, replicas: int = 2, env: dict[str, str] | None = None, **sandbox_kwargs: object
) -> AsyncIterator[Cluster]:
    """Sandboxes, the Lease API and ``replicas`` processes of ``config`` (a YAML text using
    ``${PORT}``, ``${POD_NAME}``, ``${STATE_DIR}`` and the sandboxes' variables)."""
    boxes = await start_sandboxes(**sandbox_kwargs)  # type: ignore[arg-type]
    kube = KubeLeaseSandbox()
    c = Cluster(boxes, kube)
    try:
        async with kube.serve():
            kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
            cfg = tmp / "config.yaml"
            cfg.write_text(config)
            base = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHDUTY_", "GRAFANA_", "KUBERNETES_"))}
            for i in range(replicas):
                name = f"grafana-{i}"
                port = free_port()
                state = tmp / f"state-{name}"
                state.mkdir(parents=True, exist_ok=True)
                renv = {**base, **boxes.env(), "KUBECONFIG": str(kubeconfig), "POD_NAME": name, "PORT": str(port)}
                renv.update(STATE_DIR=str(state), **(env or {}))
                rep = ReplicaProc(name, port, state, tmp / f"{name}.log", renv, cfg)
                await rep.start()
                c.replicas.append(rep)
            yield c
    finally:
        await asyncio.gather(*(r.stop() for r in c.replicas), return_exceptions=True)
        await boxes.close()
