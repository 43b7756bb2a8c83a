"""Leader election: the ``ha`` config, the Lease API emulator's answers, and the elector's loop.

The elector runs against the Lease emulator over real loopback HTTP (``LeaseLock`` through
kubernetes_asyncio), with a fake monotonic clock: who may take the lease when, and when a leader
is fenced, follow from that clock alone.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as kube

from sidecar.config import ConfigError, parse_config
from sidecar.config.ha_schema import HaConfig
from sidecar.ha.elector import Elector
from sidecar.ha.lease import LeaderRecord, LeaseError, LeaseLock, connect, now_micro
from sidecar.ha.replica import election_beat
from sidecar.health import Health
from sidecar_sandbox.kube_leases import OPTIMISTIC_LOCK, KubeLeaseSandbox

BASE = "flashduty:\n  integration_key: ${KEY}\n"
ENV = {"KEY": "k"}
LEASE, RENEW, RETRY = 15.0, 10.0, 2.0


def ha_problems(block: str) -> list[str]:
    try:
        parse_config(BASE + textwrap.dedent(block), env=ENV)
    except ConfigError as e:
        return e.problems
    return []


def test_ha_config_defaults_and_cross_checks() -> None:
    cfg = parse_config(BASE, env=ENV)
    assert cfg.ha.mode == "none" and cfg.ha.lease_name == "flashduty-sidecar"
    assert (cfg.ha.lease_duration, cfg.ha.renew_deadline, cfg.ha.retry_period) == (15.0, 10.0, 2.0)
    ok = parse_config(
        BASE + "server:\n  webhook_token: ${KEY}\n"
        "ha:\n  mode: kubernetes\n  namespace: ${POD_NAMESPACE:-}\n  identity: ${POD_NAME:-}\n",
        env=ENV,
    )
    assert ok.ha.mode == "kubernetes" and ok.ha.namespace == "" and ok.ha.identity == ""
    # /ha/events takes AlertEvents as they are: with HA, a token is required
    assert ha_problems("server:\n  webhook_token: ${T:-}\nha:\n  mode: kubernetes\n") == [
        "server.webhook_token: required with ha.mode: kubernetes (replicas forward alerts to the"
        " leader's POST /ha/events with it; without it anyone reaching the port could inject alerts)"
    ]
    assert ha_problems("ha:\n  lease_duration: 10s\n  renew_deadline: 10s\n") == [
        "ha.renew_deadline: must be less than lease_duration (10s)"
    ]
    assert ha_problems("ha:\n  retry_period: 12s\n") == ["ha.retry_period: must be less than renew_deadline (10s)"]
    assert ha_problems("ha:\n  mode: etcd\n")[0].startswith("ha.mode:")
    assert ha_problems("ha:\n  lease_duration: 5s\n  renew_deadline: 6s\n  retry_period: 7s\n") == [
        "ha.renew_deadline: must be less than lease_duration (5s)",
        "ha.retry_period: must be less than renew_deadline, itself less than lease_duration (5s)",
    ]


@pytest.fixture
async def api() -> AsyncIterator[tuple[KubeLeaseSandbox, kube.ApiClient]]:
    sandbox = KubeLeaseSandbox()
    async with sandbox.serve() as url:
        conf = kube.Configuration(host=url)
        async with kube.ApiClient(configuration=conf) as c:
            yield sandbox, c


def lock(c: kube.ApiClient, timeout: float = 1.0) -> LeaseLock:
    return LeaseLock(kube.CoordinationV1Api(c), name="fds", namespace="monitoring", timeout=timeout)


async def test_the_emulator_answers_as_kube_apiserver(api: tuple[KubeLeaseSandbox, kube.ApiClient]) -> None:
    _, c = api
    v1 = kube.CoordinationV1Api(c)
    with pytest.raises(kube.ApiException) as e:
        await v1.read_namespaced_lease("fds", "monitoring")
    assert e.value.status == 404 and '"reason":"NotFound"' in e.value.body.replace(" ", "")
    body = kube.V1Lease(metadata=kube.V1ObjectMeta(name="fds"), spec=kube.V1LeaseSpec(holder_identity="a"))
    created = await v1.create_namespaced_lease("monitoring", body)
    with pytest.raises(kube.ApiException) as e:
        await v1.create_namespaced_lease("monitoring", body)
    assert e.value.status == 409 and "AlreadyExists" in e.value.body
    stale = created.metadata.resource_version
    created.spec.holder_identity = "b"
    updated = await v1.replace_namespaced_lease("fds", "monitoring", created)
    assert updated.metadata.resource_version != stale and updated.spec.holder_identity == "b"
    created.metadata.resource_version = stale
    with pytest.raises(kube.ApiException) as e:
        await v1.replace_namespaced_lease("fds", "monitoring", created)
    assert e.value.status == 409 and '"reason": "Conflict"' in e.value.body and OPTIMISTIC_LOCK in e.value.body
    created.metadata.resource_version = None
    with pytest.raises(kube.ApiException) as e:
        await v1.replace_namespaced_lease("fds", "monitoring", created)
    assert e.value.status == 422 and "must be specified for an update" in e.value.body
    with pytest.raises(kube.ApiException) as e:
        await v1.replace_namespaced_lease("other", "monitoring", created)
    assert e.value.status == 404


async def test_a_lost_race_is_a_409_not_an_error(api: tuple[KubeLeaseSandbox, kube.ApiClient]) -> None:
    _, c = api
    a, b = lock(c), lock(c)
    assert await a.create(LeaderRecord(holder="a", lease_duration=15, address="http://a"))
    assert not await b.create(LeaderRecord(holder="b", lease_duration=15))  # AlreadyExists
    assert (await a.get()) == (await b.get())
    assert await a.update(LeaderRecord(holder="a", lease_duration=15, transitions=1))
    assert not await b.update(LeaderRecord(holder="b", lease_duration=15, transitions=1))  # read before a's write
    got = await b.get()
    assert got is not None and got.holder == "a" and got.transitions == 1


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.t += d
        await asyncio.sleep(0)


def elector(lk: LeaseLock, identity: str, clock: Clock, **kw: object) -> Elector:
    async def nothing() -> None:
        return None

    return Elector(
        lk, identity=identity, address=f"http://{identity}:9464",
        lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY,
        on_start=kw.pop("on_start", nothing), on_stop=kw.pop("on_stop", nothing),  # type: ignore[arg-type]
        clock=clock, sleep=clock.sleep, wall=now_micro,
    )  # fmt: skip


async def test_acquire_renew_expire_and_the_fence(api: tuple[KubeLeaseSandbox, kube.ApiClient]) -> None:
    sandbox, c = api
    ca, cb = Clock(), Clock()
    a, b = elector(lock(c), "a", ca), elector(lock(c), "b", cb)
    assert await a.try_acquire_or_renew()  # creates the Lease
    a.leading = True
    assert a.may_send() and a.leader == "a"
    assert not await b.try_acquire_or_renew()  # held, and b has just seen it
    assert b.leader == "a" and b.leader_address == "http://a:9464" and not b.may_send()

    cb.t += LEASE - 1  # not yet expired by b's own clock
    ca.t += RENEW - 1
    assert await a.try_acquire_or_renew()  # a renews: b sees a change, its wait starts over
    assert not await b.try_acquire_or_renew()
    cb.t += LEASE - 1
    assert not await b.try_acquire_or_renew()

    ca.t += RENEW  # a has not renewed for renew_deadline: fenced, before anyone could take over
    assert not a.may_send()
    cb.t += 1.0  # lease_duration since b last saw a change
    assert await b.try_acquire_or_renew()
    rec = await lock(c).get()
    assert rec is not None and rec.holder == "b" and rec.transitions == 1
    assert rec.acquire_time is not None and rec.renew_time is not None and rec.lease_duration == 15

    # a, frozen meanwhile (SIGSTOP), wakes up: it sees b and does not write
    assert not await a.try_acquire_or_renew()
    assert a.observed.holder == "b" and not a.may_send()
    assert [w[3] for w in sandbox.store.writes][-1] == "b"


async def test_the_loop_steps_down_within_renew_deadline_when_the_api_is_unreachable(
    api: tuple[KubeLeaseSandbox, kube.ApiClient],
) -> None:
    sandbox, c = api
    clock = Clock()
    events: list[tuple[str, float]] = []

    async def started() -> None:
        events.append(("start", clock.t))
        sandbox.down = True  # from now on, every request hangs

    async def stopped() -> None:
        events.append(("stop", clock.t))

    e = elector(lock(c, timeout=0.05), "a", clock, on_start=started, on_stop=stopped)
    task = asyncio.create_task(e.run())
    while len(events) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (_, t_start), (kind, t_stop) = events
    assert kind == "stop" and not e.leading and not e.may_send()
    # stepped down once renew_deadline passed without a renewal, before the lease could expire
    assert RENEW <= t_stop - t_start < LEASE, t_stop - t_start
    assert e.last_error is not None and "TimeoutError" in e.last_error


async def test_release_on_shutdown_lets_the_next_replica_in_at_once(
    api: tuple[KubeLeaseSandbox, kube.ApiClient],
) -> None:
    _, c = api
    clock, other = Clock(), Clock()
    a = elector(lock(c), "a", clock)
    task = asyncio.create_task(a.run())
    while not a.leading:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    rec = await lock(c).get()
    assert rec is not None and rec.holder == ""
    assert await elector(lock(c), "b", other).try_acquire_or_renew()  # no need to wait the lease out


async def test_connect_reads_kubeconfig_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = KubeLeaseSandbox()
    async with sandbox.serve():
        path = sandbox.write_kubeconfig(tmp_path / "kc", namespace="grafana")
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(path))
        api, ns = await connect(HaConfig(mode="kubernetes"))
        async with api:
            assert ns == "grafana"
            lk = LeaseLock(kube.CoordinationV1Api(api), name="x", namespace=ns, timeout=1.0)
            assert await lk.get() is None
        api, ns = await connect(HaConfig(mode="kubernetes", namespace="explicit"))
        await api.close()
        assert ns == "explicit"
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
        with pytest.raises(LeaseError, match="no Kubernetes API"):
            await connect(HaConfig(mode="kubernetes"))


async def test_a_failed_takeover_steps_down_and_the_election_goes_on(
    api: tuple[KubeLeaseSandbox, kube.ApiClient], caplog: pytest.LogCaptureFixture
) -> None:
    _, c = api
    clock = Clock()
    calls: list[str] = []

    async def start() -> None:
        calls.append("start")
        if calls.count("start") <= 2:
            raise RuntimeError("outbox locked")

    async def stop() -> None:
        calls.append("stop")

    e = elector(lock(c), "a", clock, on_start=start, on_stop=stop)
    health = Health(clock=clock)
    task = asyncio.create_task(e.run())
    health.add_heartbeat("ha-election", election_beat(e, task.done), 60.0)
    try:
        while calls.count("start") < 3:
            await asyncio.sleep(0.01)
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done(), "the election must outlive a failed takeover"
        assert calls[:5] == ["start", "stop", "start", "stop", "start"]
        assert e.leading and e.may_send() and e.takeover_error is None
        failures = [r for r in caplog.records if "taking over failed" in r.getMessage() and r.levelname == "ERROR"]
        assert len(failures) == 1, "logged once, not at every attempt"
        assert health.liveness()[0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.done()
    ok, out = health.liveness()
    assert not ok and out["ha-election"].startswith("stalled"), "an election that ended fails liveness"
