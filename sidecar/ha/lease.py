"""The ``coordination.k8s.io/v1`` Lease the replicas elect their leader on, through kubernetes_asyncio.

``LeaseLock`` is client-go's ``resourcelock.LeaseLock`` (``tools/leaderelection/resourcelock/
leaselock.go``): ``get`` reads the Lease and keeps it, ``create`` makes it, ``update`` replaces the
spec of the Lease last read, so the write carries that read's ``metadata.resourceVersion`` and the
API server refuses it with 409 Conflict when another replica wrote in between: a lost race, not an
error. The record is client-go's ``LeaderElectionRecord`` (holderIdentity, leaseDurationSeconds,
acquireTime, renewTime, leaseTransitions) plus the holder's address, in an annotation, where the
other replicas forward what they receive.

``connect`` finds the API like kubectl: the pod's service account in a cluster, else ``KUBECONFIG``
(else ``~/.kube/config``) and its current context's namespace.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from sidecar.config.ha_schema import HaConfig

__all__ = ["ADDRESS_ANNOTATION", "LeaderRecord", "LeaseError", "LeaseLock", "connect", "identity_of"]

ADDRESS_ANNOTATION = "flashduty-sidecar/address"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaseError(Exception):
    """The Lease API could not be reached, or refused for another reason than a lost race."""


@dataclass(frozen=True)
class LeaderRecord:
    holder: str = ""
    lease_duration: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    address: str = ""


class LeaseLock:
    """One Lease, read and written with optimistic concurrency (see the module docstring)."""

    def __init__(self, api: client.CoordinationV1Api, *, name: str, namespace: str, timeout: float) -> None:
        self._api, self.name, self.namespace, self._timeout = api, name, namespace, timeout
        self._lease: client.V1Lease | None = None

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def get(self) -> LeaderRecord | None:
        """The current record; None when the Lease does not exist (404)."""
        try:
            lease = await self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise LeaseError(f"get lease {self.describe()}: {e.status} {e.reason}") from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise LeaseError(f"get lease {self.describe()}: {type(e).__name__}: {e}") from None
        self._lease = lease
        return _record(lease)

    async def create(self, rec: LeaderRecord) -> bool:
        """False when another replica created it first (409 AlreadyExists)."""
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=_spec(rec))
        body.metadata.annotations = {ADDRESS_ANNOTATION: rec.address}
        return await self._write("create", rec, lambda: self._api.create_namespaced_lease(self.namespace, body))

    async def update(self, rec: LeaderRecord) -> bool:
        """False when the Lease changed since ``get`` (409 Conflict): the race is lost."""
        if self._lease is None:
            raise LeaseError("lease not initialized, call get or create first")
        lease = self._lease
        lease.spec = _spec(rec)
        lease.metadata.annotations = {**(lease.metadata.annotations or {}), ADDRESS_ANNOTATION: rec.address}
        return await self._write(
            "update", rec, lambda: self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        )

    async def _write(self, verb: str, rec: LeaderRecord, call: Any) -> bool:
        try:
            self._lease = await call()
        except ApiException as e:
            if e.status == 409:
                return False
            raise LeaseError(f"{verb} lease {self.describe()}: {e.status} {e.reason}") from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise LeaseError(f"{verb} lease {self.describe()}: {type(e).__name__}: {e}") from None
        return True


def _spec(rec: LeaderRecord) -> client.V1LeaseSpec:
    return client.V1LeaseSpec(
        holder_identity=rec.holder or None,
        lease_duration_seconds=rec.lease_duration,
        acquire_time=rec.acquire_time,
        renew_time=rec.renew_time,
        lease_transitions=rec.transitions,
    )


def _record(lease: client.V1Lease) -> LeaderRecord:
    spec = lease.spec or client.V1LeaseSpec()
    annotations = (lease.metadata.annotations if lease.metadata is not None else None) or {}
    return LeaderRecord(
        holder=spec.holder_identity or "",
        lease_duration=spec.lease_duration_seconds or 0,
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=spec.lease_transitions or 0,
        address=annotations.get(ADDRESS_ANNOTATION, ""),
    )


def now_micro() -> datetime:
    return datetime.now(UTC)


def identity_of(cfg: HaConfig) -> str:
    return cfg.identity or socket.gethostname()


def address_of(cfg: HaConfig, host: str, port: int) -> str:
    """Where the others reach this replica: ``ha.address``, else the listen host (or the host name's
    address when listening on every interface) and port."""
    if cfg.address:
        return cfg.address.rstrip("/")
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


async def connect(cfg: HaConfig) -> tuple[client.ApiClient, str]:
    """An API client and the Lease's namespace (see the module docstring)."""
    conf = client.Configuration()
    namespace = cfg.namespace
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and SA_NAMESPACE.exists():
            config.load_incluster_config(client_configuration=conf)
            namespace = namespace or SA_NAMESPACE.read_text().strip()
        else:
            path = (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]
            path = os.path.expanduser(path)
            await config.load_kube_config(config_file=path, client_configuration=conf, persist_config=False)
            if not namespace:
                _, active = config.list_kube_config_contexts(path)
                namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
    except Exception as e:  # no service account, no readable kubeconfig
        raise LeaseError(f"ha.mode kubernetes: no Kubernetes API to reach: {type(e).__name__}: {e}") from None
    return client.ApiClient(configuration=conf), namespace


async def who_leads(cfg: HaConfig) -> str:
    """One line for the operator (the ``alerts`` command): the Lease's holder, as the API has it."""
    try:
        api, namespace = await connect(cfg)
    except LeaseError as e:
        return f"high availability: leader unknown ({e})"
    async with api:
        lock = LeaseLock(client.CoordinationV1Api(api), name=cfg.lease_name, namespace=namespace, timeout=5.0)
        try:
            rec = await lock.get()
        except LeaseError as e:
            return f"high availability: leader unknown ({e})"
    if rec is None or not rec.holder:
        return f"high availability: no leader (lease {lock.describe()} {'not created' if rec is None else 'released'})"
    renewed = rec.renew_time.isoformat(timespec="seconds") if rec.renew_time else "never"
    return f"high availability: leader {rec.holder} (lease {lock.describe()}, renewed {renewed}, transitions {rec.transitions})"
