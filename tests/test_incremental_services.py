"""A Service change compiles again only the routes that looked that Service up
(RouteMemo.by_service), and a change to what translation never reads of a Service (labels,
annotations, resourceVersion) is no change at all (Store.changed). Either way the result must be
exactly a translation from scratch: statuses, and the bytes of every resource."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_fuzz as fuzz
from benchmarks.workload import NAMESPACE, objects
from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.grpcroutes import grpc_route_rules
from controlplane.gatewayapi.model import K8sObject, ObjectMeta, from_dict
from controlplane.gatewayapi.refs import BackendResolver
from controlplane.gatewayapi.rules import route_rules
from controlplane.gatewayapi.store import NsName, Store
from controlplane.gatewayapi.translator import translate
from controlplane.providers.files import parse_text
from controlplane.xds.cache import SnapshotCache
from test_incremental import GATEWAY, _entries, _full_entries, _grpc_route, _replace, store_of


def _service(doc_or_store: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in doc_or_store if d["kind"] == "Service" and d["metadata"]["name"] == name))


def _without(store: Store, kind: str, namespace: str, name: str) -> Store:
    return Store.from_objects(o for o in store.objects() if o.key != (kind, namespace, name))


def _started(docs: list[dict[str, Any]]) -> tuple[Controller, Store]:
    """A controller that has translated ``docs``, and their store."""
    controller, store = Controller(SnapshotCache()), store_of(docs)
    controller.update(store)
    return controller, store


def _resolved(controller: Controller, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """The ResolvedRefs condition of a route's first parent."""
    conditions: list[dict[str, Any]] = controller.statuses[(kind, namespace, name)]["parents"][0]["conditions"]
    return next(c for c in conditions if c["type"] == "ResolvedRefs")


def _assert_as_from_scratch(controller: Controller, store: Store) -> None:
    """Statuses and every Gateway's resource bytes as a fresh translation gives them."""
    fresh = Controller(SnapshotCache())
    fresh.update(store)
    assert controller._unstamped == fresh._unstamped
    gateways = translate(store).gateways
    assert sorted(controller.cache.gateways()) == sorted(gateways)
    for gateway in gateways:
        assert _entries(controller, gateway) == _full_entries(store, gateway), gateway


class _Reads(Mapping[NsName, Any]):
    """A store's Services, noting every one looked up (found or not)."""

    def __init__(self, services: Mapping[NsName, Any]) -> None:
        self.services = services
        self.read: set[NsName] = set()

    def __getitem__(self, key: NsName) -> Any:
        self.read.add(key)
        return self.services[key]

    def get(self, key: NsName, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return self.services.get(key, default)

    def __iter__(self) -> Iterator[NsName]:
        raise AssertionError("compiling a route never lists every Service")

    def __len__(self) -> int:
        return len(self.services)


def _assert_the_index_names_every_service_read(controller: Controller, store: Store) -> None:
    """What RouteMemo keeps of each route's Services covers every Service its compilation reads
    (compiled alone, from a store that notes the look-ups): one left out would keep a stale
    route when it changes."""
    memo = controller._memo
    for key, (route, _, uses) in memo.entries.items():
        services = _Reads(store.services)
        compiler = grpc_route_rules if route.kind == "GRPCRoute" else route_rules
        compiler(BackendResolver(dataclasses.replace(store, services=services)), route)
        assert services.read <= uses.services, key
        for service in uses.services:
            assert key in memo.by_service[service], (key, service)
    assert all(memo.by_service.values())
    assert {k for users in memo.by_service.values() for k in users} <= memo.entries.keys()


# --- what a Service change costs, and what it gives ------------------------------------------


def test_a_service_port_change_recompiles_only_the_routes_using_it() -> None:
    docs = objects(200)  # svc-3 is the backend of route-3, -53, -103 and -153
    controller, store = _started(docs)
    misses, hits, encoded = controller._memo.misses, controller._memo.hits, controller._encoded[GATEWAY].encoded
    service = _service(docs, "svc-3")
    service["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    store = _replace(store, service)
    controller.update(store)
    assert controller._memo.misses - misses == 4
    assert controller._memo.hits == hits, "no other route is looked at"
    assert controller._encoded[GATEWAY].encoded - encoded == 4, "only their virtual hosts are serialized"
    _assert_as_from_scratch(controller, store)


def test_a_label_on_a_service_changes_nothing() -> None:
    docs = objects(100)
    controller, store = _started(docs)
    versions, misses = controller.cache[GATEWAY].versions(), controller._memo.misses
    service = _service(docs, "svc-3")
    service["metadata"] |= {"labels": {"team": "a"}, "annotations": {"note": "b"}, "resourceVersion": "42"}
    store = _replace(store, service)
    assert store_of(docs).changed(store) == {}
    controller.update(store)
    assert controller._memo.misses == misses
    assert controller.cache[GATEWAY].versions() == versions
    _assert_as_from_scratch(controller, store)


def test_a_service_removed_and_added_again_resolves_and_unresolves_its_routes() -> None:
    docs = objects(100)
    controller, store = _started(docs)
    misses = controller._memo.misses
    gone = _without(store, "Service", NAMESPACE, "mirror-7")  # the mirror of route-7 and route-57
    controller.update(gone)
    assert controller._memo.misses - misses == 2
    resolved = _resolved(controller, "HTTPRoute", NAMESPACE, "route-7")
    assert (resolved["type"], resolved["status"], resolved["reason"]) == ("ResolvedRefs", "False", "BackendNotFound")
    _assert_as_from_scratch(controller, gone)
    _assert_the_index_names_every_service_read(controller, gone)
    controller.update(store)  # back: the routes that found nothing compile again
    assert controller._memo.misses - misses == 4
    _assert_as_from_scratch(controller, store)


def test_a_service_change_reaches_grpcroutes_and_cross_namespace_routes() -> None:
    """A GRPCRoute (its own cluster and protocol rule) and an HTTPRoute in another namespace,
    allowed by a ReferenceGrant, both using svc-0; then the grant goes (every route compiled)."""
    elsewhere = copy.deepcopy(objects(1)[-1])
    elsewhere["metadata"] = {"name": "elsewhere", "namespace": "other"}
    elsewhere["spec"]["parentRefs"] = [{"name": "gw", "namespace": NAMESPACE}]
    elsewhere["spec"]["hostnames"] = ["elsewhere.example.com"]
    rule = elsewhere["spec"]["rules"][0]
    rule["backendRefs"][0]["namespace"] = NAMESPACE
    rule["filters"][0]["requestMirror"]["backendRef"]["namespace"] = NAMESPACE
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": NAMESPACE},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "other"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    docs = objects(20)
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    gateway["spec"]["listeners"].append({"name": "grpc", "port": 8001, "protocol": "HTTP"})
    grpc = _grpc_route(0)
    grpc["spec"]["parentRefs"] = [{"name": "gw", "sectionName": "grpc"}]
    docs += [elsewhere, grant, grpc]
    controller, store = _started(docs)
    misses = controller._memo.misses
    for protocol in ("kubernetes.io/h2c", "kubernetes.io/ws", "bogus"):
        service = _service(docs, "svc-0")
        service["spec"]["ports"][0]["appProtocol"] = protocol
        store = _replace(store, service)
        controller.update(store)
        _assert_as_from_scratch(controller, store)
    # HTTPRoute route-0, GRPCRoute route-0 and elsewhere use svc-0; they share a listener, so
    # the translation falls back to the full path, which compiles none of them a second time.
    assert controller._memo.misses - misses == 3 * 3
    grpc_status = _resolved(controller, "GRPCRoute", NAMESPACE, "route-0")
    assert grpc_status["reason"] == "UnsupportedProtocol"
    store = _without(store, "ReferenceGrant", NAMESPACE, "g")
    controller.update(store)
    _assert_as_from_scratch(controller, store)
    assert _resolved(controller, "HTTPRoute", "other", "elsewhere")["reason"] == "RefNotPermitted"


# --- generated routes, then Services changed one at a time -----------------------------------

_OTHER_CLASS = {"mp": "someone-else", "someone-else": "mp"}
SERVICE_KEYS = [("server", "pipy"), ("other", "mirror"), ("server", "missing"), ("other", "pipy"), ("server", "mirror")]


@st.composite
def service_change(draw: st.DrawFn) -> tuple[NsName, dict[str, Any] | None]:
    """A Service of a name the generated routes use: removed (None), or written anew with ports
    8080 and 9090 present or not, named or not, with an appProtocol or not, ExternalName or not,
    labelled or not."""
    namespace, name = draw(st.sampled_from(SERVICE_KEYS))
    if draw(st.integers(0, 4)) == 0:
        return (namespace, name), None
    ports = []
    for number in draw(st.lists(st.sampled_from([8080, 9090]), min_size=1, max_size=2, unique=True)):
        body: dict[str, Any] = {"port": number}
        if draw(st.booleans()):
            body["name"] = draw(st.sampled_from(["http", "web"]))
        if draw(st.booleans()):
            body["appProtocol"] = draw(st.sampled_from(["http", "kubernetes.io/h2c", "kubernetes.io/ws", "bogus"]))
        ports.append(body)
    if len(ports) > 1:  # then each needs a name of its own
        for i, body in enumerate(ports):
            body["name"] = f"{body.get('name', 'p')}-{i}"
    spec: dict[str, Any] = {"ports": ports}
    if draw(st.integers(0, 5)) == 0:
        spec |= {"type": "ExternalName", "externalName": "backend.example.com"}
    meta = {"name": name, "namespace": namespace, "labels": {"v": str(draw(st.integers(0, 2)))}}
    return (namespace, name), {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


@st.composite
def slice_change(draw: st.DrawFn) -> tuple[tuple[str, str, str], dict[str, Any] | None]:
    """An EndpointSlice of a Service the generated routes use (two names each, so one is added
    next to another or replaces it): removed (None), or written anew with IP or FQDN addresses,
    ready or not, for a port named as the Service's or not: the fast path, or a DNS cluster."""
    namespace, service = draw(st.sampled_from(SERVICE_KEYS))
    name = f"{service}-{draw(st.sampled_from(['1', '2']))}"
    if draw(st.integers(0, 3)) == 0:
        return ("EndpointSlice", namespace, name), None
    fqdn = draw(st.integers(0, 3)) == 0
    addresses = ["backend.example.com", "other.example.com"] if fqdn else ["127.0.0.1", "10.0.0.2"]
    endpoints: list[dict[str, Any]] = []
    for address in draw(st.lists(st.sampled_from(addresses), max_size=2, unique=True)):
        ready = draw(st.sampled_from([True, False, None]))  # None: no conditions (ready)
        endpoints.append({"addresses": [address]} | ({} if ready is None else {"conditions": {"ready": ready}}))
    port: dict[str, Any] = {"port": draw(st.sampled_from([9, 10]))}
    if draw(st.booleans()):
        port["name"] = draw(st.sampled_from(["http", "web"]))
    meta = {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}}
    doc: dict[str, Any] = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta}
    doc |= {"addressType": "FQDN" if fqdn else "IPv4", "endpoints": endpoints, "ports": [port]}
    return ("EndpointSlice", namespace, name), doc


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz.documents(), st.lists(st.one_of(service_change(), slice_change(), st.none()), min_size=1, max_size=6))
def test_generated_routes_after_service_changes_are_as_from_scratch(
    example: tuple[bool, list[Any]], changes: list[tuple[Any, dict[str, Any] | None] | None]
) -> None:
    """Services or their EndpointSlices changed one at a time, and between them (None) the
    Gateway handed to another controller or back: its routes attach nowhere meanwhile, so they
    are not compiled."""
    parsed, _ = parse_text(yaml.safe_dump_all(example[1]), "fuzz.yaml")
    store = Store.from_objects(parsed.values())
    controller = Controller(SnapshotCache())
    controller.update(store)
    for change in changes:
        if change is None:
            gateways = {
                key: dataclasses.replace(
                    gw, spec={**gw.spec, "gatewayClassName": _OTHER_CLASS[gw.spec["gatewayClassName"]]}
                )
                for key, gw in store.gateways.items()
            }
            store = dataclasses.replace(store, gateways=gateways)
        else:
            key, doc = change
            store = _without(store, *key) if len(key) == 3 else _without(store, "Service", *key)
            if doc is not None:
                store = Store.from_objects([*store.objects(), from_dict(schema.validate(doc))])
        controller.update(store)
        _assert_as_from_scratch(controller, store)
        _assert_the_index_names_every_service_read(controller, store)


# --- what the diff leaves out of a Service, translation never reads ----------------------------


class _SealedMeta(ObjectMeta):
    """A Service's metadata of which only the name and namespace may be read."""

    def __getattribute__(self, name: str) -> Any:
        if name not in ("name", "namespace") and not name.startswith("__"):
            raise AssertionError(f"translation read a Service's metadata.{name}")
        return super().__getattribute__(name)


class _Sealed(K8sObject[Any]):
    """A Service of which only ``spec``, ``kind`` and the name and namespace may be read: what
    Store.changed compares of a Service (_READ), besides its key."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("source", "api_version"):
            raise AssertionError(f"translation read a Service's {name}")
        return super().__getattribute__(name)


def _sealed(service: K8sObject[Any]) -> K8sObject[Any]:
    meta = service.metadata
    return _Sealed(service.api_version, service.kind, _SealedMeta(meta.name, meta.namespace), service.spec)


def test_translation_reads_nothing_of_a_service_the_diff_leaves_out() -> None:
    docs = objects(20)
    for service in ("svc-1", "mirror-2"):
        external = _service(docs, service)
        external["spec"] |= {"type": "ExternalName", "externalName": "example.com"}
        docs.append(external)
    docs.append({**_grpc_route(1), "metadata": {"name": "grpc", "namespace": NAMESPACE}})
    store = store_of(docs)
    sealed = dataclasses.replace(store, services={k: _sealed(s) for k, s in store.services.items()})
    assert translate(sealed) == translate(store)
    controller = Controller(SnapshotCache())
    controller.update(store)
    controller.update(sealed)
    _assert_as_from_scratch(controller, store)


def test_a_service_change_while_its_routes_are_detached_is_not_forgotten() -> None:
    """A route that attaches nowhere is not compiled, but its compiled rules from before stay in
    the memo: a change to its Service meanwhile must not let them come back with the Gateway."""
    docs = objects(20)
    controller, store = _started(docs)
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    detached = copy.deepcopy(gateway)
    detached["spec"]["gatewayClassName"] = "someone-else"  # not ours: no route attaches
    store = _replace(store, detached)
    controller.update(store)
    service = _service(docs, "svc-3")
    service["spec"]["ports"][0]["appProtocol"] = "bogus"
    store = _replace(store, service)
    controller.update(store)
    store = _replace(store, gateway)
    controller.update(store)
    _assert_as_from_scratch(controller, store)
    resolved = _resolved(controller, "HTTPRoute", NAMESPACE, "route-3")
    assert resolved["reason"] == "UnsupportedProtocol"
