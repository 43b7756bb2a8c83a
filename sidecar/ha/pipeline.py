"""The delivery pipeline of a replica: dispatching only while this replica leads.

``ReplicaPipeline`` is a ``DeliveryPipeline`` that starts paused and can be stopped and started
again: ``resume`` when this replica becomes the leader, ``pause`` when it stops leading. Pausing
cancels the deliveries, follow-up waits and picture drains in flight at once (grace 0): their
claims go back to the outbox with what was already uploaded, so nothing is lost, and nothing of
this replica reaches Flashduty once another may lead. A shutdown instead drains with ``stop(grace)``
while this replica still leads (``Replica.shutdown``). While paused it counts as alive for the
liveness probe (a follower is healthy).
"""

from __future__ import annotations

import time
from typing import Any

from sidecar.delivery.pipeline import DeliveryPipeline

__all__ = ["ReplicaPipeline"]


class ReplicaPipeline(DeliveryPipeline):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paused = True
        self._beat = time.monotonic()

    @property
    def heartbeat(self) -> float:
        return time.monotonic() if self.paused else self._beat

    @heartbeat.setter
    def heartbeat(self, value: float) -> None:
        self._beat = value

    @property
    def running(self) -> bool:
        return self.paused or super().running

    async def resume(self) -> None:
        """Start dispatching (again): the claims a previous term or a forwarder left are released."""
        if not self.paused:
            return
        self._reset_run()
        self.paused = False
        await self.start()

    async def pause(self) -> None:
        """Stop claiming and cancel everything in flight now (it stays in the outbox)."""
        if self.paused:
            return
        self.paused = True
        await DeliveryPipeline.stop(self, 0.0)

    async def stop(self, grace: float) -> None:
        if not self.paused:
            await super().stop(grace)
        self.paused = True
