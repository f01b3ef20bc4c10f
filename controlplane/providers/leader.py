"""Leader election on a coordination.k8s.io/v1 Lease: only the holder writes status.

Every replica serves xDS; status is written by one, or replicas would fight over
lastTransitionTime and burn API requests. The algorithm is client-go's: a Lease is taken when it
is free, ours, or was not renewed for a whole lease duration *as observed on our own clock*
(comparing renewTime to our clock would trust clock sync between nodes); every update carries
the resourceVersion read, so two candidates cannot both win (the loser gets a 409). The holder
renews every ``retry_period`` and steps down if it could not renew within ``renew_deadline``. A
clean shutdown releases the Lease so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .kubeapi import ApiError, KubeApi, Resource

log = logging.getLogger("mirrorplane.leader")

LEASE = Resource("Lease", "coordination.k8s.io", "v1", "leases", True)


@dataclass(frozen=True)
class LeaseOptions:
    namespace: str
    name: str = "mirrorplane-status-writer"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Keeps trying to hold the Lease; ``is_leader`` says whether we hold it now."""

    def __init__(self, api: KubeApi, options: LeaseOptions, on_change: Callable[[bool], None] = lambda _: None) -> None:
        self.api = api
        self.options = options
        self.on_change = on_change
        self.is_leader = False
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) as last seen
        self._observed_at = 0.0  # our monotonic clock when it last changed
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.is_leader:
            await self._release()
            self._set(False)

    async def _run(self) -> None:
        while True:
            try:
                took = await self._try_acquire_or_renew()
            except ApiError as exc:
                log.debug("lease.error error=%s", exc)
                took = False
            now = time.monotonic()
            if took:
                self._renewed_at = now
                self._set(True)
            elif self.is_leader and (now - self._renewed_at) > self.options.renew_deadline:
                self._set(False)
            await asyncio.sleep(self.options.retry_period)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info(
                "lease.%s lease=%s/%s identity=%s",
                "acquired" if leader else "lost",
                self.options.namespace,
                self.options.name,
                self.options.identity,
            )
            self.on_change(leader)

    async def _try_acquire_or_renew(self) -> bool:
        o = self.options
        path = LEASE.path(o.namespace)
        try:
            lease = await self.api.request("GET", LEASE.path(o.namespace, o.name))
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": LEASE.api_version,
                "kind": "Lease",
                "metadata": {"name": o.name, "namespace": o.namespace},
                "spec": self._spec(transitions=0, acquired=_now()),
            }
            try:
                await self.api.request("POST", path, body=body)
            except ApiError as exc2:
                if exc2.status == 409:  # another replica created it first
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        observed = (holder, str(spec.get("renewTime") or ""))
        if observed != self._observed:
            self._observed, self._observed_at = observed, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or o.lease_duration)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != o.identity and not expired:
            return False
        ours = holder == o.identity
        lease["spec"] = self._spec(
            transitions=int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
            acquired=spec.get("acquireTime") if ours else _now(),
        )
        try:
            await self.api.request("PUT", LEASE.path(o.namespace, o.name), body=lease)
        except ApiError as exc:
            if exc.status == 409:  # somebody else renewed or took it since we read it
                return False
            raise
        return True

    def _spec(self, *, transitions: int, acquired: Any) -> dict[str, Any]:
        now = _now()
        return {
            "holderIdentity": self.options.identity,
            "leaseDurationSeconds": max(1, round(self.options.lease_duration)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _release(self) -> None:
        """Give the Lease up (empty holder, 1 s duration) so a standby takes over without waiting."""
        o = self.options
        try:
            lease = await self.api.request("GET", LEASE.path(o.namespace, o.name), timeout=5)
            if (lease.get("spec") or {}).get("holderIdentity") != o.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _now()}
            await self.api.request("PUT", LEASE.path(o.namespace, o.name), body=lease, timeout=5)
            log.info("lease.released lease=%s/%s identity=%s", o.namespace, o.name, o.identity)
        except ApiError as exc:
            log.info("lease.release_failed error=%r then=takeover_on_expiry", str(exc))
