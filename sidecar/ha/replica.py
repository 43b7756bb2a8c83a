"""The daemon as one replica of several (``ha.mode: kubernetes``): its two cleanup contexts and seams.

``lease_context`` (early, before the Flashduty client) reaches the Lease API and makes the
``Elector``; ``run_context`` (last) runs the election. What leading changes, and where:

* **Flashduty**: the client's session carries a fence (``fenced_session``): no request leaves
  unless ``Elector.may_send()``; the ``ReplicaPipeline`` dispatches only while leading
  (``resume`` on becoming leader, ``pause`` — in-flight work cancelled, kept in the outbox — on
  stepping down). Only the leader uploads, so the account's upload limit holds across replicas.
* **polling rules**: every replica evaluates them (``for`` timers and state stay warm); a
  follower's sink refuses the events (``rule_sink``: ``SinkRefused``), which keeps them due. On
  taking over, every firing instance is made due again (``RuleScheduler.resend_firing``): the new
  leader's next evaluation sends what its state holds firing (idempotent by alert_key: one
  duplicate per alert per failover), and the resolves the old one may not have sent.
* **received alerts** (webhook, Alertmanager API) are durable before 2xx on any replica; a follower
  forwards them to the leader (``forward.py``).
* **reconcile** (with ``app_key``) runs on each takeover, not at every replica's start.
* **shutdown** (``Replica.shutdown``): a leader drains for ``server.shutdown_grace`` while still
  leading, releases the Lease, then forwards what is left to the next leader (for up to
  ``ha.renew_deadline``); a follower forwards what it holds (for up to ``server.shutdown_grace``).
  What no leader took stays in the outbox, for this replica's next start with the same state_dir.

``flashduty_sidecar_leader`` is 1 while ``may_send()``; every change of the holder is counted and
logged once (``elector``). ``/readyz`` does not depend on any of this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import aiojobs
from aiohttp import web
from kubernetes_asyncio import client as kube

from sidecar.flashduty.api import USER_AGENT
from sidecar.ha.elector import Elector
from sidecar.ha.forward import PATH, Forwarder, make_events_handler
from sidecar.ha.lease import LeaseError, LeaseLock, address_of, connect, identity_of
from sidecar.model import AlertEvent
from sidecar.reconcile_job import reconcile_once, start_delay
from sidecar.rules.runner import SinkRefused
from sidecar.status.provider import EXTRAS

__all__ = [
    "HA",
    "Replica",
    "add_routes",
    "election_beat",
    "enabled",
    "fenced_session",
    "lease_context",
    "rule_sink",
    "run_context",
]

log = logging.getLogger("sidecar.ha")

ELECTION_ALLOWANCE = 60.0  # seconds without a turn of the election loop before liveness fails


class Replica:
    """This replica's part in the election: what starting and stopping to lead does."""

    def __init__(self, app: web.Application, api: kube.ApiClient, started: float) -> None:
        self._app, self.api, self._started = app, api, started
        self.elector: Elector  # set by lease_context
        self.forwarder: Forwarder | None = None
        self._forward_job: aiojobs.Job[None] | None = None
        self._reconcile_job: aiojobs.Job[None] | None = None
        self.closing = False

    def may_send(self) -> bool:
        return self.elector.may_send()

    async def start_leading(self) -> None:
        from sidecar import app as keys

        if self.closing:
            return  # re-elected while draining for shutdown: nothing starts again
        await self._stop_forwarding()
        await self._app[keys.PIPELINE].resume()  # type: ignore[attr-defined]
        resent = self._app[keys.SCHEDULER].resend_firing()  # sent by the next evaluation of each rule
        log.info("taking over: %d firing alert(s) will be sent again", resent, extra={"alerts": resent})
        cfg = self._app[keys.CURRENT].config
        if cfg.flashduty.app_key is not None:
            delay = start_delay(self._app, elapsed=time.monotonic() - self._started)
            self._reconcile_job = await self._app[keys.JOBS].spawn(reconcile_once(self._app, delay), name="reconcile")

    async def stop_leading(self) -> None:
        from sidecar import app as keys

        await self._app[keys.PIPELINE].pause()  # type: ignore[attr-defined]
        if self._reconcile_job is not None:
            job, self._reconcile_job = self._reconcile_job, None
            await job.close()
        if not self.closing:
            await self.start_forwarding()

    async def start_forwarding(self) -> None:
        from sidecar import app as keys

        if self._forward_job is not None:
            return
        self.forwarder = self._forwarder()
        self._forward_job = await self._app[keys.JOBS].spawn(self.forwarder.run(), name="ha-forward")

    def _forwarder(self) -> Forwarder:
        from sidecar import app as keys

        return Forwarder(
            self._app[keys.OUTBOX],
            leader_address=lambda: self.elector.leader_address,
            token=lambda: _token(self._app),
            timeout=self._app[keys.CURRENT].config.flashduty.timeout,
            max_body=self._app[keys.CURRENT].config.server.webhook_max_body,  # the leader's limit too
        )

    async def shutdown(self, election: aiojobs.Job[None]) -> None:
        """SIGTERM: a leader drains its deliveries while it still leads (the election keeps renewing,
        so the fence holds), then the Lease is released; what is left goes to the next leader."""
        from sidecar import app as keys

        self.closing = True
        cfg = self._app[keys.CURRENT].config
        if self.elector.may_send():
            await self._app[keys.PIPELINE].stop(cfg.server.shutdown_grace)
            within = cfg.ha.renew_deadline  # the next leader takes the released Lease within retry_period
        else:
            within = cfg.server.shutdown_grace
        await election.close()  # a leader steps down and releases the Lease
        await self._stop_forwarding()
        outbox = self._app[keys.OUTBOX]
        if not outbox.pending_count():
            return
        left = await (self.forwarder or self._forwarder()).flush(
            within, look=self.elector.look, poll=self.elector.retry_period
        )
        if left:
            log.warning(
                "shutting down: %d event(s) could not be handed to a leader within %gs; they stay in this"
                " replica's outbox (state_dir) and are sent when it starts again with it",
                left, within, extra={"events": left},
            )  # fmt: skip

    async def _stop_forwarding(self) -> None:
        if self._forward_job is not None:
            job, self._forward_job = self._forward_job, None
            await job.close()

    def on_transition(self, before: str, after: str) -> None:
        from sidecar import app as keys

        if before or after == self.elector.identity:
            self._app[keys.METRICS].leader_transitions.inc()

    def describe(self) -> str:
        e = self.elector
        role = "leading" if e.may_send() else "following"
        return f"leader {e.leader or 'none'} · this replica {e.identity} is {role} · lease {e._lock.describe()}"


HA = web.AppKey("ha", Replica)


def kick(app: web.Application) -> None:
    """A new event is durable: a follower's forwarder hands it over now, not at its next poll."""
    replica = app.get(HA)
    if replica is not None and replica.forwarder is not None:
        replica.forwarder.kick()


def enabled(app: web.Application) -> bool:
    from sidecar import app as keys

    return bool(app[keys.CURRENT].config.ha.mode == "kubernetes")


def _token(app: web.Application) -> str | None:
    from sidecar import app as keys

    tok = app[keys.CURRENT].config.server.webhook_token
    return tok.get_secret_value() if tok is not None else None


async def lease_context(app: web.Application) -> AsyncIterator[None]:
    """The Lease API client and the elector (the election starts in ``run_context``)."""
    from sidecar import app as keys

    if not enabled(app):
        yield
        return
    cfg = app[keys.CURRENT].config
    try:
        api, namespace = await connect(cfg.ha)
    except LeaseError as e:
        raise keys.StartupError(str(e)) from None
    replica = Replica(app, api, time.monotonic())
    lock = LeaseLock(
        kube.CoordinationV1Api(api), name=cfg.ha.lease_name, namespace=namespace, timeout=cfg.ha.retry_period
    )
    replica.elector = Elector(
        lock,
        identity=identity_of(cfg.ha),
        address=address_of(cfg.ha, cfg.server.host, cfg.server.port),
        lease_duration=cfg.ha.lease_duration,
        renew_deadline=cfg.ha.renew_deadline,
        retry_period=cfg.ha.retry_period,
        on_start=replica.start_leading,
        on_stop=replica.stop_leading,
        on_transition=replica.on_transition,
    )
    app[HA] = replica
    app[keys.METRICS].leader.set_function(lambda: 1.0 if replica.may_send() else 0.0)
    yield
    await api.close()


async def run_context(app: web.Application) -> AsyncIterator[None]:
    """Follow (forward) from the start, then run the election until shutdown."""
    from sidecar import app as keys

    replica = app.get(HA)
    if replica is None:
        yield
        return
    await replica.start_forwarding()
    job = await app[keys.JOBS].spawn(replica.elector.run(), name="ha-election")
    allowance = max(ELECTION_ALLOWANCE, 2 * replica.elector.lease_duration)
    app[keys.HEALTH].add_heartbeat("ha-election", election_beat(replica.elector, lambda: job.closed), allowance)
    yield
    app[keys.HEALTH].remove("ha-election")
    await replica.shutdown(job)


def election_beat(elector: Elector, ended: Callable[[], bool]) -> Callable[[], float | None]:
    """The election loop's heartbeat for liveness: a loop that ended (it runs until shutdown) is stalled."""
    return lambda: 0.0 if ended() else elector.heartbeat


def fenced_session(app: web.Application) -> aiohttp.ClientSession | None:
    """The Flashduty client's session, refusing every request unless this replica may send."""
    replica = app.get(HA)
    if replica is None:
        return None

    async def fence(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        if not replica.may_send():
            raise aiohttp.ClientConnectionError("this replica is not the leader: nothing is sent to Flashduty")
        return await handler(req)

    agent = f"{USER_AGENT} (replica {replica.elector.identity})"  # which replica sent it, in Flashduty's logs
    return aiohttp.ClientSession(headers={"User-Agent": agent}, middlewares=(fence,))


def rule_sink(app: web.Application, submit: Callable[[AlertEvent], None]) -> Callable[[AlertEvent], None]:
    """The polling rules' sink: a follower evaluates but does not emit (the events stay due)."""

    def sink(ev: AlertEvent) -> None:
        replica = app.get(HA)
        if replica is not None and not replica.may_send():
            raise SinkRefused(ev.alert_key)
        submit(ev)

    return sink


def add_routes(app: web.Application, put: Callable[[web.Application, AlertEvent], None]) -> None:
    """``POST /ha/events``: what followers forward (see ``forward.py``)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        replica = request.app.get(HA)
        if replica is None:
            raise web.HTTPNotFound()
        events = make_events_handler(
            leading=replica.may_send, put=lambda ev: put(request.app, ev), token=lambda: _token(request.app)
        )
        return await events(request)

    app.router.add_post(PATH, handler)


def _status_line(app: web.Application) -> str | None:
    replica = app.get(HA)
    return replica.describe() if replica is not None else "not enabled"


EXTRAS["High availability"] = _status_line
