"""Writes the controller's Gateway API status to the cluster's status subresources.

Only a difference is written: the wanted status is compared with the live one (as the watch last
delivered it) with lastTransitionTime left out, so a steady state costs no API requests, and a new
leader writes only what its predecessor left different. Writes are JSON merge patches
(``application/merge-patch+json``): kubernetes-asyncio would default to JSON Patch, which the
status body is not. A merge patch replaces lists whole, so an HTTPRoute's ``status.parents`` is
read-modify-write: the entries of other controllers are copied from the live object, and the
patch carries the resourceVersion read, so a concurrent writer makes it fail with 409 instead of
being overwritten; a 409 is retried once the watch has delivered the newer object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import is_not
from typing import TYPE_CHECKING, Any, Protocol

from ..gatewayapi.status import StatusKey, share_parents, stamp
from ..gcpause import paused_gc
from .kubeapi import MERGE_PATCH, ApiError, KubeApi
from .kubernetes import ROUTE_KINDS, KubernetesProvider
from .leader import LeaderElector, LeaseOptions

if TYPE_CHECKING:
    from ..serve import ControlPlane

log = logging.getLogger("mirrorplane.status")

Addresses = list[dict[str, str]]
SLICE = 100  # statuses compared between two turns of the event loop (500: 20-40 ms at a cold start)
FREEZE_EVERY = 1_000
"""Patches made or statuses written between two ``gc.freeze()``. The patches of a sync live until
written (10,000 at a cold start, each a few nested dicts, for the 8-20 s of the writes), and each
write leaves the live status its echo brings (kept for the next read-modify-write). Left in the
collector's oldest generation, they made its full collections, which run on the event loop, take
91-108 ms in the middle of the writes (timed with ``gc.callbacks``). Frozen, as ``gcpause`` does
after a large load, they are out of the collector's sight and still freed by reference counting
when dropped; a reference cycle among what is frozen (the writes make none we know of) would stay
until the process ends."""

GIVE_WAY_MAX = 5.0
"""Seconds status writes wait at most, at a time, for the pushes due or in flight to be answered
(``Pushes``): an Envoy that never answers holds status back no longer than that."""


class Pushes(Protocol):
    """The xDS pushes status writes give way to (the ADS server's NodeRegistry).

    At a cold start the 10,000 start-up writes (our requests and their echoes, and on a shared
    machine the API server answering them) competed for the CPUs with the first push and the
    Envoy applying it: the writer waits while a push is due or in flight, before each write and
    each slice of comparisons. Status a few hundred milliseconds later costs nobody; routes later do."""

    def pushing(self) -> bool: ...

    async def answered(self) -> None: ...


# Status lists that several controllers share, one entry each per controllerName: an HTTPRoute's
# parents, a policy's ancestors (GEP-713).
_SHARED_LISTS = {"HTTPRoute": "parents", "GRPCRoute": "parents", "MirrorPolicy": "ancestors"}


def service_addresses(spec: dict[str, Any], status: dict[str, Any]) -> Addresses | None:
    """Where a Service is reachable: its LoadBalancer ingress IPs/hostnames, else its ClusterIP(s)."""
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    out = []
    for entry in ingress:
        if entry.get("ip"):
            out.append({"type": "IPAddress", "value": entry["ip"]})
        elif entry.get("hostname"):
            out.append({"type": "Hostname", "value": entry["hostname"]})
    if not out:
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        out = [{"type": "IPAddress", "value": ip} for ip in ips if ip and ip != "None"]
    return out or None


def without_times(node: Any) -> Any:
    """A status body with every lastTransitionTime removed (what 'changed' is judged on)."""
    if isinstance(node, dict):
        return {k: without_times(v) for k, v in node.items() if k != "lastTransitionTime"}
    if isinstance(node, list):
        return [without_times(v) for v in node]
    return node


class StatusWriter:
    """Keeps the cluster's status equal to the controller's, while ``enabled()`` (the Lease) says so."""

    def __init__(
        self,
        api: KubeApi,
        provider: KubernetesProvider,
        *,
        controller_name: str,
        enabled: Callable[[], bool] = lambda: True,
        gateway_service: tuple[str, str] | None = None,
        concurrency: int = 8,
        retry_delay: float = 0.5,
        pushes: Pushes | None = None,
    ) -> None:
        self.api = api
        self.provider = provider
        self.controller_name = controller_name
        self.enabled = enabled
        self.gateway_service = gateway_service
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.pushes = pushes
        self._giving_way_since: float | None = None
        self.wanted: dict[StatusKey, dict[str, Any]] = {}
        self.writes = 0
        # What the next sync compares: everything (at start, on becoming leader, after a relist),
        # else only the statuses wanted anew and the live ones that moved. A change of one route
        # compared all 10,000 on the event loop (300 ms and more).
        self._all = True
        self._dirty: set[StatusKey] = set()
        self._taken: dict[StatusKey, dict[str, Any]] = self.wanted  # what _dirty has caught up with
        self._addresses_seen: Addresses | None = None
        self._echoes: dict[StatusKey, str] = {}  # the resourceVersion each write of ours made
        # What we last wrote, and the resourceVersion it was written over: until the watch shows a
        # newer version, the live status is older than our write and is not compared against.
        self._sent: dict[StatusKey, tuple[str, dict[str, Any]]] = {}
        self._failing: set[StatusKey] = set()  # warned about once until written
        # Writes not answered yet, with the resourceVersion of any echo-like event meanwhile: the
        # watch may bring a write's echo before the write's own answer.
        self._in_flight: dict[StatusKey, str] = {}
        self._unfrozen = 0  # patches made and statuses written since the last gc.freeze()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- hooks ---------------------------------------------------------------------------------

    def on_statuses(self, statuses: dict[StatusKey, dict[str, Any]]) -> None:
        """Controller status listener: remember what is wanted and wake the writer, which works
        out what changed (``_take_wanted``) once the change's push is answered. Done here, on the
        loop between the translation and its push, 10,000 identity checks took 4-9 ms of it."""
        self.wanted = statuses
        self._kick.set()

    def on_live_status(self, key: StatusKey | None, resource_version: str) -> None:
        """Provider listener: the live status of ``key`` moved (None: a whole kind was relisted).
        Our own writes come back this way (10,000 at a cold start) and are known by the
        resourceVersion they made; another writer's status is compared at the next sync. It does
        not wake the writer: a foreign overwrite is put right at the next change, or kick."""
        if key is None:
            self._all = True
        elif self._echoes.pop(key, None) == resource_version:
            self._sent.pop(key, None)  # the live status is our write now: nothing to hold back
        elif key in self._in_flight:  # maybe our write's echo, ahead of its answer: see _write
            self._in_flight[key] = resource_version
        else:
            self._dirty.add(key)

    def kick(self, *_: object) -> None:
        """Re-check everything (on becoming leader, or when live status may have moved)."""
        self._all = True
        self._kick.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            await self._kick.wait()
            self._kick.clear()
            if not self.enabled():
                continue
            try:
                pending = await self.sync()
            except Exception:  # never let one bad write stop status for good
                log.exception("status.sync_failed")
                self._all = True  # what this sync had taken to compare is compared again
                pending = 1
            if pending:  # conflicts resolve at once; a failing API gets fewer requests
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._kick.set()
            else:
                delay = self.retry_delay

    def _take_wanted(self) -> None:
        """Mark the statuses wanted anew since the last call, and ours to remove from a route. The
        controller hands on the same body for a status that did not change, so identity tells
        (compared in C loops, as ``Store.changed`` does: 10,000 statuses at each change)."""
        old, new = self._taken, self.wanted
        if old is new:
            return
        keys = list(new)
        dirty = set(itertools.compress(keys, map(is_not, map(old.get, keys), new.values())))
        added = sum(1 for key in dirty if key not in old)
        if len(old) > len(new) - added:  # some are no longer wanted
            dirty |= old.keys() - new.keys()
        self._dirty |= dirty
        self._taken = new

    async def sync(self) -> int:
        """Write every status that differs from the live one; return how many must be retried."""
        await self._give_way()
        self._take_wanted()
        with paused_gc():  # 10,000 patches at a cold start: 170-250 collections on the loop, 50-100 ms
            patches = await self._patches()
        if not patches:
            return 0
        self._leave(len(patches))  # they live until written: 10,000 at a cold start, for seconds
        # ``concurrency`` writers take the patches in turn: a task per patch (10,000 at a cold
        # start) made the loop run them all up to the semaphore in one turn, a stall of its own.
        failed: list[StatusKey] = []
        queue = iter(patches)

        async def writer() -> None:
            for patch in queue:
                await self._give_way()
                if not await self._write(*patch):
                    failed.append(patch[0])

        await asyncio.gather(*(writer() for _ in range(min(self.concurrency, len(patches)))))
        self._dirty.update(failed)
        if len(patches) >= FREEZE_EVERY:
            # After a storm of writes (10,000 at a cold start), one full collection: with what
            # lives frozen it scans little (1 ms), and clearing the interpreter's free lists that
            # the writes filled lets pymalloc hand back 3 MB of arenas.
            del patches
            gc.collect()
        return len(failed)

    async def _give_way(self) -> None:
        """Wait while a push is due or in flight (``Pushes``), ``GIVE_WAY_MAX`` seconds at most at
        a time: pushes that are never all answered at once do not stop status for good."""
        if self.pushes is None or not self.pushes.pushing():
            self._giving_way_since = None
            return
        now = time.monotonic()
        if self._giving_way_since is None:
            self._giving_way_since = now
        left = self._giving_way_since + GIVE_WAY_MAX - now
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pushes.answered(), left)
                # Answered: the next push is given way to afresh. (Left set, the bound ran from
                # this wait's start, and writes went ahead of every push after it.)
                self._giving_way_since = None

    def _leave(self, objects: int) -> None:
        """Note ``objects`` things (patches, written statuses) that live on; freeze once they
        come to ``FREEZE_EVERY``."""
        self._unfrozen += objects
        if self._unfrozen >= FREEZE_EVERY:
            self._unfrozen = 0
            gc.freeze()

    async def _patches(self) -> list[tuple[StatusKey, dict[str, Any], dict[str, Any]]]:
        """The patches to send, from the statuses to compare; between slices of ``SLICE``
        comparisons the event loop gets its turn (10,000 at a cold start take 300 ms)."""
        wanted, addresses = self.wanted, self._addresses()
        keys: Iterable[StatusKey]
        if self._all:
            self._all, self._dirty = False, set()
            # What is wanted, then the routes whose parents no longer include a Gateway of ours
            # (our stale entries are dropped). Not gathered into a set and sorted first: at
            # 10,000 routes that held the loop 25-50 ms before the first comparison.
            routes = ((kind, ns, name) for kind in ROUTE_KINDS for ns, name in self.provider.live_keys(kind))
            keys = itertools.chain(list(wanted), (key for key in routes if key not in wanted))
        else:
            keys, self._dirty = self._dirty, set()
            if addresses != self._addresses_seen:  # where the fleet is reachable: on every Gateway
                keys.update(key for key in wanted if key[0] == "Gateway")
        self._addresses_seen = addresses
        out = []
        parts: dict[tuple[Any, ...], Any] = {}  # the patches' equal parts, held once (share_parents)
        for n, key in enumerate(keys):
            if n and n % SLICE == 0:
                await asyncio.sleep(0)
                await self._give_way()
            body = wanted.get(key)
            if body is None:
                if key[0] not in ROUTE_KINDS:
                    continue
                body = {"parents": []}
            patch = self._patch(key, body, addresses, parts)
            if patch is not None:
                out.append(patch)
        return out

    def _addresses(self) -> Addresses | None:
        if self.gateway_service is None:
            return None
        svc = self.provider.store.services.get(self.gateway_service)
        live = self.provider.live_status("Service", *self.gateway_service)
        if svc is None or live is None:
            return None
        return service_addresses(dict(svc.spec), live[0])

    def _patch(
        self, key: StatusKey, body: dict[str, Any], addresses: Addresses | None, parts: dict[tuple[Any, ...], Any]
    ) -> tuple[StatusKey, dict[str, Any], dict[str, Any]] | None:
        """The merge patch that makes the live status what is wanted (None: it already is)."""
        kind, ns, name = key
        live = self.provider.live_status(kind, ns, name)
        if live is None:
            return None  # not in the cluster (deleted, or not seen yet): nothing to write to
        current, resource_version = live
        body = without_times(body)
        if kind == "Gateway":
            # Where the Envoy fleet is reachable, or nothing (None: a merge patch removes it).
            body["addresses"] = addresses
        shared = _SHARED_LISTS.get(kind)
        if shared is not None:
            # Theirs are compared and sent as they are; stamp() below gives their times back.
            others = [
                p for p in without_times(current.get(shared) or []) if p.get("controllerName") != self.controller_name
            ]
            body = {**body, shared: others + body[shared]}
            if not body[shared] and not current.get(shared):
                return None
        # Only the fields we own are compared: other fields of status are not ours to judge.
        if without_times({k: current.get(k) for k in body}) == body:
            return None
        if self._sent.get(key) == (resource_version, body):
            return None  # written already; the watch has not delivered it yet
        # A patch lives until written (10,000 at a cold start): its equal parts held once. (``body``
        # is the controller's, whose parts are shared already.)
        stamped = share_parents(stamp(body, current, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")), parts)
        return key, {"metadata": {"resourceVersion": resource_version}, "status": stamped}, body

    async def _write(self, key: StatusKey, patch: dict[str, Any], body: dict[str, Any]) -> bool:
        kind, ns, name = key
        try:
            written, seen = await self._request(key, patch)
        except ApiError as exc:
            if exc.status == 404:  # deleted since: the watch will forget it
                return True
            if exc.status == 409:  # changed since we read it: retry on the newer object
                log.debug("status.conflict object=%s/%s/%s", kind, ns, name)
                return False
            if key not in self._failing:
                self._failing.add(key)
                log.warning(
                    "status.write_failed object=%r error=%r then=retry",
                    f"{kind} {ns + '/' if ns else ''}{name}",
                    str(exc),
                )
            return False
        self._failing.discard(key)
        self.writes += 1
        self._leave(1)
        made = str((written.get("metadata") or {}).get("resourceVersion") or "")
        if not made or seen != made:  # else its echo came first, and nothing after it
            self._echoes[key] = made
            self._sent[key] = (patch["metadata"]["resourceVersion"], body)
            if seen:  # another writer's change after ours (before it, ours would have failed)
                self._dirty.add(key)
        log.debug("status.written object=%s/%s/%s", kind, ns, name)
        return True

    async def _request(self, key: StatusKey, patch: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The write's answer, and the resourceVersion the watch brought for this status while
        it was on its way ("" if none): our echo may come before our answer."""
        kind, ns, name = key
        self._in_flight[key] = ""
        try:
            answer = await self.api.request(
                "PATCH", self.provider.resource(kind).path(ns, name, "status"), body=patch, content_type=MERGE_PATCH
            )
        except BaseException:
            if self._in_flight.pop(key, ""):  # the live status moved meanwhile: compare it again
                self._dirty.add(key)
            raise
        return answer, self._in_flight.pop(key, "")


class KubernetesStatus:
    """The ControlPlane extension for a cluster: the status writer, behind a Lease when given one."""

    def __init__(
        self,
        provider: KubernetesProvider,
        *,
        controller_name: str,
        lease: LeaseOptions | None = None,
        gateway_service: tuple[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.controller_name = controller_name
        self.lease = lease
        self.gateway_service = gateway_service
        self.writer: StatusWriter | None = None
        self.elector: LeaderElector | None = None

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector else True

    async def start(self, plane: ControlPlane) -> None:
        assert self.provider.api is not None, "start the provider first"
        self.writer = StatusWriter(
            self.provider.api,
            self.provider,
            controller_name=self.controller_name,
            enabled=lambda: self.is_leader,
            gateway_service=self.gateway_service,
            pushes=plane.registry,
        )
        plane.controller.status_listeners.append(self.writer.on_statuses)
        self.provider.status_listeners.append(self.writer.on_live_status)
        self.writer.on_statuses(plane.controller.statuses)
        await self.writer.start()
        if self.lease is not None:
            self.elector = LeaderElector(self.provider.api, self.lease, on_change=self.writer.kick)
            await self.elector.start()

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
        if self.elector is not None:
            await self.elector.stop()
