"""A Kubernetes API server's ``coordination.k8s.io/v1`` Lease endpoints, on loopback.

Only what leader election uses: ``GET``, ``POST`` and ``PUT`` of namespaced leases
(``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``), answered as kube-apiserver
answers them:

* every write bumps ``metadata.resourceVersion`` (a string, opaque to clients);
* ``PUT`` is an optimistic-concurrency update. Following the generic registry's ``Update``
  (kubernetes/kubernetes ``staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go``)
  with the Lease strategy (``pkg/registry/coordination/lease/strategy.go``:
  ``AllowCreateOnUpdate`` and ``AllowUnconditionalUpdate`` both false): a missing object is
  404 NotFound, an update without ``resourceVersion`` is 422 Invalid ("must be specified for an
  update"), a stale ``resourceVersion`` is 409 Conflict with the optimistic-lock message;
* ``POST`` of an existing name is 409 AlreadyExists;
* errors are ``Status`` objects as ``staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go``
  builds them (``NewNotFound``, ``NewAlreadyExists``, ``NewConflict``, ``NewInvalid``).

``LeaseStore`` is the object store (usable in-process by unit tests); ``KubeLeaseSandbox`` serves
it, can be made unreachable (``down``: every request waits, then the connection is dropped) and
writes a kubeconfig pointing at itself (``write_kubeconfig``), read like kubectl reads one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["Conflict", "KubeLeaseSandbox", "LeaseStore", "StatusError"]

GROUP, RESOURCE = "coordination.k8s.io", "leases"
QUALIFIED = f"{RESOURCE}.{GROUP}"  # schema.GroupResource.String()
OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"


class StatusError(Exception):
    """A ``metav1.Status`` failure (``errors.go``)."""

    def __init__(self, code: int, reason: str, message: str, name: str, causes: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.name, self.causes = code, reason, message, name, causes

    def status(self) -> dict[str, Any]:
        details: dict[str, Any] = {"name": self.name, "group": GROUP, "kind": RESOURCE}
        if self.causes:
            details["causes"] = self.causes
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        }


class Conflict(StatusError):
    def __init__(self, name: str) -> None:  # NewConflict(qualifiedResource, name, OptimisticLockError)
        super().__init__(
            409, "Conflict", f'Operation cannot be fulfilled on {QUALIFIED} "{name}": {OPTIMISTIC_LOCK}', name
        )


def _not_found(name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{QUALIFIED} "{name}" not found', name)


class LeaseStore:
    """Leases by (namespace, name), with the API server's resourceVersion rules."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._version = 1000
        self.writes: list[tuple[float, str, str, str]] = []  # (time, verb, name, holderIdentity)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get((namespace, name))
        if obj is None:
            raise _not_found(name)
        return copy.deepcopy(obj)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            raise StatusError(422, "Invalid", f'Lease.{GROUP} "" is invalid: metadata.name: Required value', name)
        if (namespace, name) in self._objects:
            raise StatusError(409, "AlreadyExists", f'{QUALIFIED} "{name}" already exists', name)
        obj = self._stamp(namespace, body, created=time.time())
        self._objects[(namespace, name)] = obj
        self.writes.append((time.time(), "create", name, str(obj["spec"].get("holderIdentity") or "")))
        return copy.deepcopy(obj)

    def update(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        existing = self._objects.get((namespace, name))
        if existing is None:  # AllowCreateOnUpdate: false
            raise _not_found(name)
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if not version:  # AllowUnconditionalUpdate: false
            cause = {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: 0: must be specified for an update",
                "field": "metadata.resourceVersion",
            }
            message = f'Lease.{GROUP} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update'
            raise StatusError(422, "Invalid", message, name, [cause])
        if version != existing["metadata"]["resourceVersion"]:
            raise Conflict(name)
        obj = self._stamp(namespace, body, created=existing["metadata"]["creationTimestamp"])
        self._objects[(namespace, name)] = obj
        self.writes.append((time.time(), "update", name, str(obj["spec"].get("holderIdentity") or "")))
        return copy.deepcopy(obj)

    def _stamp(self, namespace: str, body: dict[str, Any], *, created: Any) -> dict[str, Any]:
        self._version += 1
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = f"{GROUP}/v1", "Lease"
        meta = obj.setdefault("metadata", {})
        meta["namespace"], meta["resourceVersion"] = namespace, str(self._version)
        if isinstance(created, float):
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        meta["creationTimestamp"] = created
        meta.setdefault("uid", f"lease-{namespace}-{meta.get('name')}")
        obj.setdefault("spec", {})
        return obj


class KubeLeaseSandbox:
    """The Lease API over HTTP; ``down = True`` makes it unreachable (requests hang, then drop)."""

    def __init__(self, store: LeaseStore | None = None) -> None:
        self.store = store or LeaseStore()
        self.down = False
        self.requests = 0
        self.url = ""

    def make_app(self) -> web.Application:
        app = web.Application()
        base = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        app.router.add_get(base + "/{name}", self._get)
        app.router.add_post(base, self._create)
        app.router.add_put(base + "/{name}", self._update)
        return app

    async def _guard(self) -> None:
        self.requests += 1
        if self.down:  # unreachable: no answer until the client gives up, then the connection goes
            await asyncio.sleep(30)
            raise web.HTTPServiceUnavailable()

    async def _get(self, request: web.Request) -> web.Response:
        await self._guard()
        return self._answer(lambda: self.store.get(request.match_info["ns"], request.match_info["name"]))

    async def _create(self, request: web.Request) -> web.Response:
        await self._guard()
        body = await request.json()
        return self._answer(lambda: self.store.create(request.match_info["ns"], body), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        await self._guard()
        body = await request.json()
        return self._answer(lambda: self.store.update(request.match_info["ns"], request.match_info["name"], body))

    @staticmethod
    def _answer(op: Any, status: int = 200) -> web.Response:
        try:
            return web.json_response(op(), status=status)
        except StatusError as e:
            return web.json_response(e.status(), status=e.code)

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this server (token auth, as a service account)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "sandbox", "user": {"token": "sandbox-kube-token"}}],
            "contexts": [
                {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": namespace}}
            ],
            "current-context": "sandbox",
        }
        p = Path(path)
        p.write_text(json.dumps(doc))  # JSON is YAML
        return p

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        try:
            yield self.url
        finally:
            await runner.cleanup()
