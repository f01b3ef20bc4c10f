"""Store → Gateway API translator → xDS translator → snapshot cache, and the status it yields.

The controller is the one place where the pure layers meet the serving state: it hands each
Gateway's resources to the cache (which decides whether anything changed) and keeps the latest
Gateway API status, stamped with transition times, for the admin API and the logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .gatewayapi.model import K8sObject
from .gatewayapi.rules import RouteMemo
from .gatewayapi.status import StatusKey, conditions_in, has_problem, is_problem, stamp_shared
from .gatewayapi.store import NsName, RouteKey, Store
from .gatewayapi.translator import Options, Translation, translate, with_endpoints
from .gcpause import paused_gc
from .ir import GatewayIR
from .quarantine import Held, held_statuses, without_held
from .shadow.tagging import TagTables
from .xds.accesslog import RouteTags
from .xds.cache import Snapshot, SnapshotCache
from .xds.encoded import EncodedMemo
from .xds.resources import Resources
from .xds.translator import XdsOptions, build_resources, load_assignment

log = logging.getLogger("mirrorplane.controller")

# What an HTTPRoute's references resolve to: a change to any of these recompiles every route.
# Services and EndpointSlices are not among them: a change to a Service, or to its slices,
# compiles again the routes that looked that Service up.
_REFERENCED_KINDS = {"referencegrants", "namespaces", "secrets"}
# The kinds whose change alone lets the translator start from the last translation.
_ROUTE_INPUTS = {"httproutes", "grpcroutes", "services", "endpointslices"}


@dataclass(frozen=True)
class Plan:
    """An update made by :meth:`Controller.prepare`, ready for :meth:`Controller.apply`."""

    result: Translation
    snapshots: dict[str, Snapshot]
    gone: list[str]  # Gateways no longer translated
    started: float
    statuses_changed: int | None  # None: the endpoint-only fast path (no status recomputed)
    tags: TagTables | None = None  # shadow testing's, per Gateway; None: unchanged


class Controller:
    def __init__(
        self, cache: SnapshotCache, *, options: Options = Options(), xds_options: XdsOptions = XdsOptions()
    ) -> None:
        self.cache = cache
        self.options = options
        self.xds_options = xds_options
        self.statuses: dict[StatusKey, dict[str, Any]] = {}
        self.gateways: dict[str, GatewayIR] = {}
        self.translations = 0
        # Called with the stamped statuses after every update (the Kubernetes status writer).
        self.status_listeners: list[Callable[[dict[StatusKey, dict[str, Any]]], None]] = []
        # Called with (seconds the update took, objects whose conditions changed): the metrics.
        self.update_listeners: list[Callable[[float, int], None]] = []
        # Called with each Gateway's shadow tag table after a translation (the receiver's hub).
        self.tag_listeners: list[Callable[[TagTables], None]] = []
        self._tags: dict[str, RouteTags] = {}
        # The last full translation, its input and its resources: the endpoint-only fast path
        # starts from them.
        self.endpoint_updates = 0
        self._store: Store | None = None
        self._last: Translation | None = None
        self._resources: dict[str, Resources] = {}
        self._memo = RouteMemo()
        self._encoded: dict[str, EncodedMemo] = {}  # per Gateway: its serialized virtual hosts
        self._unstamped: dict[StatusKey, dict[str, Any]] = {}  # the statuses as translated, before stamping
        # Routes of either kind left out because Envoy NACKed what they became (quarantine.py),
        # and the store as the provider gave it (with them), which refresh() translates again.
        self.held: dict[RouteKey, Held] = {}
        self._input: Store | None = None

    @property
    def routes(self) -> Mapping[RouteKey, K8sObject[Any]]:
        """Every route (of either kind) the provider holds, held ones included."""
        return self._input.routes if self._input is not None else {}

    def resources(self, gateway: str) -> Resources | None:
        """What the last translation made of a Gateway (the snapshot served, unless a test or a
        tool set one directly)."""
        return self._resources.get(gateway)

    @property
    def last_input(self) -> Store | None:
        """The store the provider last gave (held routes included)."""
        return self._input

    def refresh(self) -> None:
        """Translate the last store again: the held routes changed."""
        if self._input is not None:
            self.update(self._input)

    def _build(self, key: str, gateway: GatewayIR) -> Resources:
        """A Gateway's Envoy resources; the previous ones when its IR did not change (a route
        change on another Gateway rebuilds nothing here)."""
        if self._last is not None and key in self._resources and self._last.gateways.get(key) == gateway:
            return self._resources[key]
        memo = self._encoded.setdefault(key, EncodedMemo())
        return build_resources(gateway, self.xds_options, memo)

    def _endpoints_only(self, store: Store, services: set[NsName]) -> dict[str, Resources] | None:
        """When only EndpointSlices changed, update just the endpoints of the backends they feed
        (translator.with_endpoints): only ClusterLoadAssignments are rebuilt and re-serialized.
        Returns the Gateways' new resources, or None, for a translation, whenever that is not
        certain."""
        if self._last is None:
            return None
        fresh = with_endpoints(store, self._last, services, self._memo)
        if fresh is None:
            return None
        updates = {}
        for key, gateway in fresh.gateways.items():
            old = self._last.gateways[key]
            if gateway is old:
                continue
            claims = {
                b.name: load_assignment(b) for b, was in zip(gateway.backends, old.backends, strict=True) if b != was
            }
            built = self._resources[key]
            updates[key] = replace(built, endpoints=MappingProxyType({**built.endpoints, **claims}))
        self._last = fresh
        return updates

    def update(self, store: Store) -> Translation:
        """Translate ``store`` and serve the result (all on the calling thread)."""
        return self.apply(self.prepare(store))

    def prepare(self, store: Store) -> Plan:
        """The costly half of an update: translate, build and serialize the snapshots.

        It touches no serving state (the cache, the listeners), so the server runs it in a worker
        thread and keeps its event loop answering meanwhile; :meth:`apply` then installs the
        result. Calls must not overlap (the providers await each update before the next).
        """
        started = time.perf_counter()
        self._input = store
        store = without_held(store, self.held)
        changed = self._store.changed(store) if self._store is not None else None
        if changed is None or changed.keys() & _REFERENCED_KINDS:
            self._memo.invalidate()  # what routes resolve to may differ: compile every route again
        endpoints = _slice_services(self._store, store, changed)
        if changed is not None and changed.keys() == {"endpointslices"}:
            updates = self._endpoints_only(store, endpoints)
            if updates is not None:
                self._resources.update(updates)
                self._store = store
                assert self._last is not None  # _endpoints_only answers only after a translation
                return Plan(self._last, self._snapshots(updates), [], started, None)
        # The routes that looked up a changed Service (an added one too: they found none), or
        # one whose EndpointSlices changed.
        stale = self._memo.services_changed(changed.get("services", set()) | endpoints if changed else set())
        self._memo.changed = (
            {("HTTPRoute", *k) for k in changed.get("httproutes", ())}
            | {("GRPCRoute", *k) for k in changed.get("grpcroutes", ())}
            | stale
            if changed is not None
            else None
        )
        self._memo.routes_only = changed is not None and changed.keys() <= _ROUTE_INPUTS
        with paused_gc():
            result = translate(store, self.options, self._memo)
            built = {key: self._build(key, gateway) for key, gateway in result.gateways.items()}
            snapshots = self._snapshots(built)
            tags = {key: self._tags.setdefault(key, RouteTags()).table(gw) for key, gw in result.gateways.items()}
        self._store, self._last, self._resources = store, result, built
        for gone in set(self._encoded) - set(result.gateways):
            del self._encoded[gone]
        for gone in set(self._tags) - set(result.gateways):
            del self._tags[gone]
        statuses, which = result.statuses, result.changed
        if self.held:
            statuses = {**statuses, **held_statuses(self.held, result.gateways, self.options.controller_name)}
            which = None
        with paused_gc():
            statuses_changed = self._record_statuses(statuses, which)
        untranslated = sorted(set(self.cache.gateways()) - set(result.gateways))
        return Plan(result, snapshots, untranslated, started, statuses_changed, tags)

    def _snapshots(self, built: dict[str, Resources]) -> dict[str, Snapshot]:
        return {key: Snapshot.build(key, res, previous=self.cache.get(key)) for key, res in built.items()}

    def apply(self, plan: Plan) -> Translation:
        """Install what :meth:`prepare` made (on the event loop the server runs on)."""
        for snapshot in plan.snapshots.values():
            self.cache.install(snapshot)
        for gone in plan.gone:
            self.cache.remove(gone)
            log.info("gateway.removed gateway=%s", gone)
        self.gateways = plan.result.gateways
        if plan.tags is not None:
            for on_tags in self.tag_listeners:
                on_tags(plan.tags)
        self.translations += 1
        seconds = time.perf_counter() - plan.started
        if plan.statuses_changed is None:
            self.endpoint_updates += 1
            log.info("translate.endpoints_only gateways=%d seconds=%.4f", len(plan.result.gateways), seconds)
        else:
            for listener in self.status_listeners:
                listener(self.statuses)
            routes = len(self._store.httproutes) + len(self._store.grpcroutes) if self._store is not None else 0
            log.info("translate.done gateways=%d routes=%d seconds=%.3f", len(plan.result.gateways), routes, seconds)
        for on_update in self.update_listeners:
            on_update(seconds, plan.statuses_changed or 0)
        return plan.result

    def _record_statuses(
        self, statuses: dict[StatusKey, dict[str, Any]], which: frozenset[StatusKey] | None = None
    ) -> int:
        """Stamp and keep ``statuses``; returns how many objects' conditions changed. ``which``:
        the only keys that may differ from the last statuses recorded (None: any)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fresh: dict[StatusKey, dict[str, Any]] = {}
        keys: Iterable[StatusKey] = statuses
        if which is not None and self._unstamped:
            fresh = dict(self.statuses)
            for key in which:  # (not ``which - statuses.keys()``: that makes a set of every key)
                if key not in statuses:
                    fresh.pop(key, None)
            keys = [key for key in which if key in statuses]
        changed = 0
        well: list[StatusKey] = []  # changed and without a problem: logged after the loop
        parts: dict[tuple[Any, ...], Any] = {}
        for key in keys:
            body = statuses[key]
            old = self.statuses.get(key)
            if old is not None and self._unstamped.get(key) == body:
                fresh[key] = old  # the same status as before: nothing to stamp or log
                continue
            fresh[key] = stamp_shared(body, old, now, parts)
            if old is None or _summary(old) != _summary(body):
                if not _log_problems(key, body):
                    well.append(key)
                changed += 1
        _log_well(well)
        self.statuses, self._unstamped = fresh, statuses
        return changed


def _slice_services(old: Store | None, new: Store, changed: dict[str, set[Any]] | None) -> set[NsName]:
    """The Services whose EndpointSlices changed (by each slice's label, before and after)."""
    services: set[NsName] = set()
    if changed is None or old is None:
        return services
    for key in changed.get("endpointslices", ()):
        for slice_ in (old.endpointslices.get(key), new.endpointslices.get(key)):
            if slice_ is not None and (name := slice_.metadata.labels.get("kubernetes.io/service-name")):
                services.add((slice_.namespace, name))
    return services


def _summary(body: dict[str, Any]) -> list[tuple[str, str, str, str, Any]]:
    return [(w, c["type"], c["status"], c["reason"], c.get("observedGeneration")) for w, c in conditions_in(body)]


# Above this many objects whose status became well in one update (a cold start, a Gateway
# change), they are counted on one line and each is logged at debug: at 10,000 routes the lines
# took 90 ms of the cold start's CPU, more than stamping the statuses.
LOG_EACH_WELL = 20


def _log_problems(key: StatusKey, body: dict[str, Any]) -> bool:
    """Log a status with a problem (always, one line per object); False when it has none."""
    if not has_problem(body):
        return False
    bad = [
        f"{w + ': ' if w else ''}{c['type']}={c['status']} ({c['reason']}: {c['message']})"
        for w, c in conditions_in(body)
        if is_problem(c)
    ]
    log.warning("status.changed object=%r problems=%r", _object(key), "; ".join(bad))
    return True


def _log_well(keys: list[StatusKey]) -> None:
    if len(keys) <= LOG_EACH_WELL:
        for key in keys:
            log.info("status.changed object=%r ok=True", _object(key))
        return
    log.info("status.changed objects=%d ok=True", len(keys))
    if log.isEnabledFor(logging.DEBUG):
        for key in keys:
            log.debug("status.changed object=%r ok=True", _object(key))


def _object(key: StatusKey) -> str:
    kind, ns, name = key
    return f"{kind} {ns + '/' if ns else ''}{name}"
