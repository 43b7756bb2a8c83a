"""The ``ha`` section: one sender across the Grafana pod's replicas, elected on a Kubernetes Lease."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator

from sidecar.config.values import Duration, StrictModel, format_duration

__all__ = ["HaConfig"]


class HaConfig(StrictModel):
    mode: Literal["none", "kubernetes"] = "none"
    """`none`: this sidecar is the only one and sends everything. `kubernetes`: the replicas elect one leader on a `coordination.k8s.io/v1` Lease; only the leader evaluates-and-emits polling rules, reconciles and talks to Flashduty, the others forward what they receive to it."""
    lease_name: str = "flashduty-sidecar"
    """Name of the Lease the replicas share (one per Grafana deployment)."""
    namespace: str = ""
    """Namespace of the Lease. Empty: the pod's namespace in a cluster, else the kubeconfig's (`${POD_NAMESPACE:-}` from the downward API)."""
    identity: str = ""
    """This replica's `holderIdentity`, unique among the replicas. Empty: the host name (`${POD_NAME:-}` from the downward API)."""
    address: str = ""
    """Base URL at which the other replicas reach this one's `server.listen` (for `POST /ha/events`), e.g. `http://${POD_IP}:9464`. Empty: the host name's address and the listen port."""
    lease_duration: Duration = 15.0
    """How long a lease not renewed stays held: a follower takes over this long after the leader's last renewal."""
    renew_deadline: Duration = 10.0
    """A leader that could not renew for this long stops sending (before the lease can expire for the others). Less than `lease_duration`."""
    retry_period: Duration = 2.0
    """How often the lease is acquired or renewed. Less than `renew_deadline`."""

    @field_validator("lease_duration", "retry_period")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("renew_deadline")
    @classmethod
    def _below_lease(cls, v: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_duration")
        if lease is not None and v >= lease:
            raise ValueError(f"must be less than lease_duration ({format_duration(lease)})")
        return v

    @field_validator("retry_period")
    @classmethod
    def _below_renew(cls, v: float, info: ValidationInfo) -> float:
        renew, lease = info.data.get("renew_deadline"), info.data.get("lease_duration")
        if renew is not None and v >= renew:
            raise ValueError(f"must be less than renew_deadline ({format_duration(renew)})")
        if renew is None and lease is not None and v >= lease:  # renew_deadline itself was refused
            raise ValueError(
                f"must be less than renew_deadline, itself less than lease_duration ({format_duration(lease)})"
            )
        return v
