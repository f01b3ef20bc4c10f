"""Resolving backend references: kind, ReferenceGrant, Service, port, endpoints.

Primary backends and mirror backends go through the same checks (peers forgot the
ReferenceGrant on the mirror path); only the cluster name differs, so that Envoy's per-cluster
stats count mirrored traffic apart from primary traffic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import attrgetter
from typing import Any, Literal

from ..ir import Backend, Endpoint
from .model import GATEWAY_GROUP, K8sObject
from .store import NsName, Store

# Service port appProtocol → how Envoy talks to the backend. WebSocket needs nothing per cluster:
# every listener allows the upgrade, and it runs over HTTP/1.1.
APP_PROTOCOLS: dict[str, Literal["http1", "h2c"]] = {
    "http": "http1",
    "kubernetes.io/h2c": "h2c",
    "kubernetes.io/ws": "http1",
}


@dataclass(frozen=True)
class RefProblem:
    """Why a reference cannot be used: a ResolvedRefs reason and a message for the user."""

    reason: str
    message: str


# gRPC needs HTTP/2 to the backend: behind a GRPCRoute a Service port without appProtocol is
# taken as h2c; one that names HTTP/1 (or WebSocket) cannot carry gRPC.
GRPC_APP_PROTOCOLS: dict[str, Literal["http1", "h2c"]] = {"kubernetes.io/h2c": "h2c"}


def cluster_name(namespace: str, service: str, port: int, *, mirror: bool = False, grpc: bool = False) -> str:
    """``ns/svc/port`` for primary traffic, ``mirror/ns/svc/port`` for mirrored copies.

    Backends of GRPCRoutes get a ``grpc/`` prefix (``grpc/ns/svc/port``, ``mirror/grpc/ns/svc/port``):
    their cluster is always HTTP/2 while an HTTPRoute to the same port without appProtocol
    speaks HTTP/1, so one Service mirrored from both kinds becomes two clusters whose protocols
    never clash, and Envoy's stats count gRPC traffic apart.
    """
    base = f"{namespace}/{service}/{port}"
    if grpc:
        base = f"grpc/{base}"
    return f"mirror/{base}" if mirror else base


def reference_granted(
    store: Store,
    *,
    from_kind: str,
    from_namespace: str,
    to_namespace: str,
    to_kind: str,
    to_name: str,
    to_group: str = "",
) -> bool:
    """Does a ReferenceGrant in ``to_namespace`` let ``from_kind`` objects in ``from_namespace``
    refer to the target? Same-namespace references need no grant."""
    if from_namespace == to_namespace:
        return True
    for (ns, _), grant in store.referencegrants.items():
        if ns != to_namespace:
            continue
        spec: dict[str, Any] = grant.spec
        if not any(
            f.get("group") == GATEWAY_GROUP and f.get("kind") == from_kind and f.get("namespace") == from_namespace
            for f in spec.get("from", [])
        ):
            continue
        for t in spec.get("to", []):
            if (t.get("group") or "") == to_group and t.get("kind") == to_kind and t.get("name", to_name) == to_name:
                return True
    return False


def kind_and_grant_problem(
    store: Store,
    *,
    what: str,
    ref: dict[str, Any],
    namespace: str,
    expected_kind: str,
    from_kind: str,
    from_namespace: str,
    invalid_kind_reason: str,
) -> RefProblem | None:
    """The two checks every reference to a core object starts with: its kind, then (across
    namespaces) a ReferenceGrant. Shared so that backendRefs, mirrors and certificateRefs are
    granted by the same rule and explained in the same words."""
    group, kind, name = ref.get("group", ""), ref.get("kind", expected_kind), ref["name"]
    if group != "" or kind != expected_kind:
        shown = f"{group}/{kind}" if group else kind
        return RefProblem(
            invalid_kind_reason,
            f"{what} {namespace}/{name}: kind {shown} is not supported; only core {expected_kind}s are",
        )
    if not reference_granted(
        store,
        from_kind=from_kind,
        from_namespace=from_namespace,
        to_namespace=namespace,
        to_kind=expected_kind,
        to_name=name,
    ):
        return RefProblem(
            "RefNotPermitted",
            f"{what} to {expected_kind} {namespace}/{name} is not permitted: no ReferenceGrant in namespace {namespace} "
            f"allows {from_kind}s from namespace {from_namespace}",
        )
    return None


@dataclass
class Uses:
    """What compiling one route used, kept with it by RouteMemo: the backends it resolved (a
    translation that reuses the route needs them) and every Service it looked up, found or not
    (a change to one of them, or its creation, compiles the route again)."""

    backends: dict[str, Backend] = field(default_factory=dict)
    services: set[NsName] = field(default_factory=set)

    def add(self, other: Uses) -> None:
        self.backends.update(other.backends)
        self.services |= other.services

    @classmethod
    def of(cls, parts: list[Uses]) -> Uses:
        """What a route whose rule bodies used ``parts`` used: the one body's own object when
        every rule has it (10,000 one-rule routes share 250 bodies: no Uses made and filled
        per route). Shared, it is changed only by RouteMemo.refresh_backends, which gives a
        backend its current endpoints: the same change for every route holding it."""
        if parts and all(p is parts[0] for p in parts):
            return parts[0]
        # In C loops: a route of 16 rules merges 16 parts.
        backends = dict(chain.from_iterable(map(dict.items, map(_BACKENDS, parts))))
        return cls(backends, set().union(*map(_SERVICES, parts)))


_BACKENDS, _SERVICES = attrgetter("backends"), attrgetter("services")


class BackendResolver:
    """Resolves references for one translation, remembering each answer and every backend used.

    Thousands of routes name the same few Services; an answer depends only on the referring
    namespace and the reference itself, so it is computed once.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backends: dict[str, Backend] = {}
        # While set, every reference resolved is also noted here: what one rule body uses
        # (rules.rule_body sets it while it compiles one).
        self.touched: Uses | None = None
        # While set, the Uses of each rule body a route's compilation reads is appended here:
        # what one route uses (RouteMemo). Every reference a route resolves goes through a body.
        self.bodies: list[Uses] | None = None
        # rules.rule_body's compiled rule filters and backends, by what they read.
        self.rules: dict[tuple[Any, ...], Any] = {}
        self._memo: dict[tuple[Any, ...], tuple[Backend | None, RefProblem | None]] = {}
        # uses_of's merges, by the ids of the bodies' Uses (each entry keeps them).
        self._merged: dict[tuple[int, ...], tuple[Uses, list[Uses]]] = {}

    def uses_of(self, parts: list[Uses]) -> Uses:
        """Uses.of(parts), merged once per translation for every route whose rules have the
        same bodies in the same order (625 routes of 16 rules have 25 such sequences). The
        merged object is shared as Uses.of shares a body's own: RouteMemo.refresh_backends
        alone changes it, the same change for every route holding it."""
        key = tuple(map(id, parts))
        hit = self._merged.get(key)
        if hit is None:
            hit = self._merged[key] = (Uses.of(parts), parts)
        return hit[0]

    def resolve(
        self, route: K8sObject[Any], ref: dict[str, Any], *, mirror: bool = False
    ) -> tuple[Backend | None, RefProblem | None]:
        key = (
            route.kind,
            route.namespace,
            ref.get("group", ""),
            ref.get("kind", "Service"),
            ref["name"],
            ref.get("namespace"),
            ref.get("port"),
            mirror,
        )
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = resolve_backend(self.store, route, ref, mirror=mirror)
            if found[0] is not None:
                self.backends[found[0].name] = found[0]
        if self.touched is None and self.bodies is not None:
            raise RuntimeError(
                "a reference resolved outside rules.rule_body: RouteMemo would not know the route used it"
            )
        if self.touched is not None:
            # The Service resolve_backend looks up, noted even when a problem stops it sooner:
            # more than it read costs a compilation, less would keep a stale one.
            self.touched.services.add((ref.get("namespace") or route.namespace, ref["name"]))
            if found[0] is not None:
                self.touched.backends[found[0].name] = found[0]
        return found


def resolve_backend(
    store: Store, route: K8sObject[Any], ref: dict[str, Any], *, mirror: bool = False
) -> tuple[Backend | None, RefProblem | None]:
    """Turn a BackendObjectReference into a cluster, or say why it cannot be one."""
    name = ref["name"]
    namespace = ref.get("namespace") or route.namespace
    port = ref.get("port")
    what = "mirror backendRef" if mirror else "backendRef"
    problem = kind_and_grant_problem(
        store, what=what, ref=ref, namespace=namespace, expected_kind="Service",
        from_kind=route.kind, from_namespace=route.namespace, invalid_kind_reason="InvalidKind",
    )  # fmt: skip
    if problem:
        return None, problem
    service = store.services.get((namespace, name))
    if service is None:
        return None, RefProblem("BackendNotFound", f"{what}: Service {namespace}/{name} not found")
    if port is None:
        return None, RefProblem("BackendNotFound", f"{what}: Service {namespace}/{name} needs a port")
    spec: Mapping[str, Any] = service.spec
    service_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    grpc = route.kind == "GRPCRoute"
    cluster = cluster_name(namespace, name, port, mirror=mirror, grpc=grpc)
    if spec.get("type") == "ExternalName" and spec.get("externalName"):
        return Backend(cluster, (Endpoint(spec["externalName"], port),), "dns", "h2c" if grpc else "http1"), None
    if service_port is None:
        return None, RefProblem("BackendNotFound", f"{what}: Service {namespace}/{name} has no port {port}")
    app_protocol = service_port.get("appProtocol")
    known = GRPC_APP_PROTOCOLS if grpc else APP_PROTOCOLS
    protocol = known.get(app_protocol) if app_protocol else ("h2c" if grpc else "http1")
    if protocol is None:
        return None, RefProblem(
            "UnsupportedProtocol",
            f"{what}: Service {namespace}/{name} port {port} has appProtocol {app_protocol}; supported"
            + (" behind a GRPCRoute (none means h2c): " if grpc else ": ")
            + ", ".join(sorted(known)),
        )
    endpoints, discovery = _endpoints(store, namespace, name, service_port)
    backend = Backend(cluster, endpoints, discovery, protocol, (namespace, name, port))
    return backend, None


def with_current_endpoints(store: Store, backend: Backend) -> Backend:
    """The backend with its Service's endpoints as ``store`` has them now.

    For the endpoint-only fast path: the caller knows the Service itself did not change, so the
    reference is still resolved exactly as it was; only the EndpointSlices are read again.
    """
    if backend.service is None:
        return backend
    namespace, name, port = backend.service
    service = store.services.get((namespace, name))
    spec: Mapping[str, Any] = service.spec if service is not None else {}
    service_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if service_port is None:
        return backend
    endpoints, discovery = _endpoints(store, namespace, name, service_port)
    return replace(backend, endpoints=endpoints, discovery=discovery)


def _endpoints(
    store: Store, namespace: str, service: str, service_port: dict[str, Any]
) -> tuple[tuple[Endpoint, ...], Literal["eds", "dns"]]:
    """Ready endpoints of a Service port from its EndpointSlices.

    A slice port is matched by the Service port's name (both empty for a single unnamed port).
    IP slices win over FQDN slices; a Service with only FQDN slices becomes a DNS cluster.
    """
    port_name = service_port.get("name") or ""
    ip_eps: set[Endpoint] = set()
    dns_eps: set[Endpoint] = set()
    for slice_ in store.endpointslices_for(namespace, service):
        body: Mapping[str, Any] = slice_.spec
        target = next((p.get("port") for p in body.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if target is None:
            continue
        for ep in body.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False or not ep.get("addresses"):
                continue
            address = ep["addresses"][0]
            if body.get("addressType") == "FQDN":
                dns_eps.add(Endpoint(address, target))
                continue
            try:
                ip_eps.add(Endpoint(str(ipaddress.ip_address(address)), target))
            except ValueError:
                continue  # not an IP: the API server would have refused it; never let it break translation
    if ip_eps or not dns_eps:
        return tuple(sorted(ip_eps, key=lambda e: (e.host, e.port))), "eds"
    return tuple(sorted(dns_eps, key=lambda e: (e.host, e.port))), "dns"
