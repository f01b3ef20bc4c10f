"""The endpoint-only fast path: an EndpointSlice change rebuilds and re-serializes only the
ClusterLoadAssignments it affects, and gives exactly what a full translation would."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks.workload import NAMESPACE, objects
from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.status import StatusKey
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.xds.cache import Snapshot, SnapshotCache
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.xds.translator import build_resources

GATEWAY = f"{NAMESPACE}/gw"


def store_of(docs: list[dict[str, Any]]) -> Store:
    return Store.from_objects(from_dict(schema.validate(d)) for d in docs)


def with_endpoint(docs: list[dict[str, Any]], slice_name: str, address: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(docs)
    for d in out:
        if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == slice_name:
            d["endpoints"].append({"addresses": [address]})
    return out


def full_translation(store: Store) -> dict[str, str]:
    controller = Controller(SnapshotCache())
    controller.update(store)
    return controller.cache[GATEWAY].versions()


def test_endpoint_change_takes_the_fast_path_and_matches_a_full_translation() -> None:
    docs = objects(200)
    controller = Controller(SnapshotCache())
    controller.update(store_of(docs))
    before = controller.cache.get(GATEWAY)
    assert before is not None

    changed = store_of(with_endpoint(docs, "mirror-7-1", "127.0.0.7"))
    controller.update(changed)
    after = controller.cache.get(GATEWAY)
    assert after is not None and controller.endpoint_updates == 1

    assert after.versions() == full_translation(changed), "the fast path must give what a full translation gives"
    assert after.changed_types(before) == [ENDPOINT]
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert after[type_url] is before[type_url], "untouched types are reused, not re-serialized"
    touched = {n for n, e in after[ENDPOINT].entries.items() if e is not before[ENDPOINT].entries[n]}
    assert touched == {f"mirror/{NAMESPACE}/mirror-7/8080"}


def test_slice_of_an_unreferenced_service_changes_nothing() -> None:
    docs = objects(10)  # routes use services 0..9 only
    controller = Controller(SnapshotCache())
    controller.update(store_of(docs))
    before = controller.cache.get(GATEWAY)
    controller.update(store_of(with_endpoint(docs, "svc-42-1", "127.0.0.42")))
    assert controller.endpoint_updates == 1
    assert controller.cache.get(GATEWAY) is before


def test_any_other_change_takes_the_full_path() -> None:
    docs = objects(10)
    controller = Controller(SnapshotCache())
    controller.update(store_of(docs))
    renamed = copy.deepcopy(docs)
    for d in renamed:
        if d["kind"] == "Service" and d["metadata"]["name"] == "svc-1":
            d["spec"]["ports"][0]["name"] = "http"  # the slice's unnamed port no longer matches
    store = store_of(with_endpoint(renamed, "svc-1-1", "127.0.0.9"))
    controller.update(store)
    assert controller.endpoint_updates == 0
    assert controller.cache[GATEWAY].versions() == full_translation(store)


def _replace(store: Store, doc: dict[str, Any]) -> Store:
    """The same store (the same objects) with one object replaced, as a provider builds it."""
    new = from_dict(schema.validate(doc))
    return Store.from_objects([*(o for o in store.objects() if o.key != new.key), new])


def _two_gateways(n: int) -> list[dict[str, Any]]:
    docs = objects(n)
    gw2 = copy.deepcopy(next(d for d in docs if d["kind"] == "Gateway"))
    gw2["metadata"]["name"] = "gw2"
    other = copy.deepcopy(docs[-1])
    other["metadata"]["name"] = "on-gw2"
    other["spec"]["parentRefs"] = [{"name": "gw2"}]
    return [*docs, gw2, other]


def test_a_route_change_recompiles_that_route_only_and_matches_a_full_translation() -> None:
    docs = _two_gateways(300)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    gw2_resources = controller._resources[f"{NAMESPACE}/gw2"]
    hits, misses = controller._memo.hits, controller._memo.misses

    changed = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-7"))
    changed["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 42
    store = _replace(store, changed)
    controller.update(store)
    assert controller._memo.misses - misses == 1, "only the changed route is compiled again"
    assert controller._memo.hits == hits, "every other route is reused without being looked at"
    assert controller.cache[GATEWAY].versions() == full_translation(store)
    assert controller._resources[f"{NAMESPACE}/gw2"] is gw2_resources, "the other Gateway is not rebuilt"


def _grpc_route(i: int, percent: int = 100) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": f"route-{i}", "namespace": NAMESPACE},  # the names HTTPRoutes have too
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": [f"grpc-{i}.example.com"],
            "rules": [
                {
                    "matches": [{"method": {"service": f"svc{i}.Echo", "method": "Echo"}}],
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {"backendRef": {"name": "svc-1", "port": 8080}, "percent": percent},
                        }
                    ],
                    "backendRefs": [{"name": "svc-0", "port": 8080}],
                }
            ],
        },
    }


def test_a_grpcroute_change_recompiles_that_route_only_and_matches_a_full_translation() -> None:
    docs = [*objects(100), *(_grpc_route(i) for i in range(100))]
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    hits, misses = controller._memo.hits, controller._memo.misses

    store = _replace(store, _grpc_route(7, percent=42))
    controller.update(store)
    assert controller._memo.misses - misses == 1, "only the changed GRPCRoute is compiled again"
    # Both kinds share the listener (which wins a hostname depends on both), so every route is
    # replayed from the memo rather than left alone.
    assert controller._memo.hits - hits == 200, "every route, HTTPRoute or GRPCRoute, is reused"
    assert controller.cache[GATEWAY].versions() == full_translation(store)


def test_a_service_change_recompiles_the_routes_using_it() -> None:
    """(More in test_incremental_services.py.)"""
    docs = objects(50)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    misses = controller._memo.misses
    service = copy.deepcopy(next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "svc-3"))
    service["spec"]["ports"].append({"port": 9090})
    store = _replace(store, service)
    controller.update(store)
    assert controller._memo.misses - misses == 1  # route-3's
    assert controller.cache[GATEWAY].versions() == full_translation(store)


def test_after_an_endpoint_update_a_route_change_keeps_the_new_endpoints() -> None:
    docs = objects(20)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    slice_doc = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "svc-2-1"))
    slice_doc["endpoints"].append({"addresses": ["127.0.0.22"]})
    store = _replace(store, slice_doc)
    controller.update(store)
    assert controller.endpoint_updates == 1
    route = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-5"))
    route["spec"]["hostnames"] = ["changed.example.com"]
    store = _replace(store, route)
    controller.update(store)
    assert controller.cache[GATEWAY].versions() == full_translation(store)


def _entries(controller: Controller, gateway: str = GATEWAY) -> dict[str, dict[str, bytes]]:
    snapshot = controller.cache.get(gateway)
    assert snapshot is not None
    return {t: {n: e.data for n, e in snapshot[t].entries.items()} for t in snapshot.types}


def _full_entries(store: Store, gateway: str = GATEWAY) -> dict[str, dict[str, bytes]]:
    """A translation without any memo: every message built whole and serialized by protobuf."""
    snapshot = Snapshot.build(gateway, build_resources(translate(store).gateways[gateway]))
    return {t: {n: e.data for n, e in snapshot[t].entries.items()} for t in snapshot.types}


def test_a_route_change_reserializes_one_virtual_host_and_is_byte_equal_to_a_full_translation() -> None:
    docs = objects(300)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    encoded = controller._encoded[GATEWAY]
    before = encoded.encoded

    changed = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-7"))
    changed["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/changed"
    store = _replace(store, changed)
    controller.update(store)
    assert encoded.encoded - before == 1, "only the changed route's virtual host is built and serialized"
    assert _entries(controller) == _full_entries(store)


def test_after_a_route_change_the_encoded_virtual_hosts_hold_only_the_new_route_table() -> None:
    """The unchanged virtual hosts' bytes are views into the route table they were cut from: kept
    pointing into the one before an edit, they held both tables (5.6 MB more after one change at
    10,000 routes). After an edit they point into the new one, and the old one can go."""
    docs = objects(50)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    changed = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-7"))
    changed["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/changed"
    controller.update(_replace(store, changed))
    (chain,) = controller._encoded[GATEWAY]._chains.values()
    held = {id(p.obj) if isinstance(p, memoryview) else id(p) for p in chain.parts}
    assert held == {id(chain.data)}
    assert all(chain.framed[id(vh)] is part for vh, part in zip(chain.vhosts, chain.parts, strict=True))


def test_a_new_hostname_on_a_shared_virtual_host_is_byte_equal_to_a_full_translation() -> None:
    docs = objects(50)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    joined = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-9"))
    joined["spec"]["hostnames"] = ["host-3.example.com"]  # now shares route-3's virtual host
    store = _replace(store, joined)
    controller.update(store)
    assert _entries(controller) == _full_entries(store)
    gone = store.httproutes[(NAMESPACE, "route-3")]
    removed = Store.from_objects(o for o in store.objects() if o is not gone)
    controller.update(removed)
    assert _entries(controller) == _full_entries(removed)


def test_a_gateway_change_reattaches_every_route_and_is_byte_equal_to_a_full_translation() -> None:
    docs = objects(50)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    gateway = copy.deepcopy(next(d for d in docs if d["kind"] == "Gateway"))
    gateway["spec"]["listeners"][0]["hostname"] = "host-4.example.com"  # only route-4 still attaches
    store = _replace(store, gateway)
    controller.update(store)
    assert _entries(controller) == _full_entries(store)
    full = Controller(SnapshotCache())
    full.update(store)
    assert controller._unstamped == full._unstamped, "statuses equal a full translation's"


def test_a_provider_that_rebuilds_every_object_still_recompiles_only_the_changed_route() -> None:
    docs = objects(100)
    controller = Controller(SnapshotCache())
    controller.update(store_of(docs))
    misses, encoded = controller._memo.misses, controller._encoded[GATEWAY].encoded
    changed = copy.deepcopy(docs)
    next(d for d in changed if d["metadata"]["name"] == "route-3")["spec"]["hostnames"] = ["new.example.com"]
    store = store_of(changed)  # every object new, all but one equal to before (a file reparsed whole)
    controller.update(store)
    assert controller._memo.misses - misses == 1
    assert controller._encoded[GATEWAY].encoded - encoded == 1
    assert _entries(controller) == _full_entries(store)


def test_httproute_grpcroute_conflicts_are_the_same_with_the_memo() -> None:
    """The conflict between kinds is decided after each route's (memoised) attachment: editing
    either side must give exactly what a fresh translation gives, statuses included."""
    http = next(d for d in objects(3) if d["kind"] == "HTTPRoute")
    docs = [*objects(3), {**_grpc_route(0), "metadata": {"name": "grpc-0", "namespace": NAMESPACE}}]
    grpc = docs[-1]
    grpc["spec"]["hostnames"] = list(http["spec"]["hostnames"])  # the same host as an HTTPRoute
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    # The same (empty) creationTimestamp: namespace/name decides, and "grpc-0" < "route-0".
    loser = ("HTTPRoute", NAMESPACE, http["metadata"]["name"])
    [parent] = controller.statuses[loser]["parents"]
    assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "False"

    changed = copy.deepcopy(grpc)
    changed["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 42
    store = _replace(store, changed)
    controller.update(store)
    fresh = Controller(SnapshotCache())
    fresh.update(store)

    def strip(statuses: dict[StatusKey, dict[str, Any]]) -> dict[StatusKey, dict[str, Any]]:
        """Without the GatewayClass, and without transition times: the fresh controller stamps
        the clock's second now, which the first update may not have shared (a flake, seen once)."""
        return {k: untimed(v) for k, v in statuses.items() if k[0] != "GatewayClass"}

    def untimed(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: untimed(v) for k, v in node.items() if k != "lastTransitionTime"}
        if isinstance(node, list):
            return [untimed(v) for v in node]
        return node

    assert strip(controller.statuses) == strip(fresh.statuses)
    assert controller.cache[GATEWAY].versions() == fresh.cache[GATEWAY].versions()
    assert _entries(controller) == _full_entries(store)


def _mirror_policy(route: str, header: str) -> dict[str, Any]:
    return {
        "apiVersion": "mirrorplane.io/v1alpha1",
        "kind": "MirrorPolicy",
        "metadata": {"name": "shadow", "namespace": NAMESPACE},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}],
            "requestHeaderModifier": {"set": [{"name": "x-shadow", "value": header}]},
        },
    }


def test_a_mirror_policy_change_reaches_the_targeted_route_and_matches_a_full_translation() -> None:
    """Policies are applied after the route memo: adding, changing, retargeting and deleting one
    never leaves a memoized route with a stale mirror leg, and compiles no route again."""
    docs = objects(30)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    unpoliced = controller.cache[GATEWAY].versions()
    misses = controller._memo.misses
    for route, header in (("route-3", "a"), ("route-3", "b"), ("route-4", "b")):
        store = _replace(store, _mirror_policy(route, header))
        controller.update(store)
        versions = controller.cache[GATEWAY].versions()
        assert versions == full_translation(store), (route, header)
        assert _entries(controller) == _full_entries(store), (route, header)
        assert versions[ROUTE] != unpoliced[ROUTE]
    assert controller._memo.misses == misses, "a policy change compiles no route again"
    store = Store.from_objects(o for o in store.objects() if o.kind != "MirrorPolicy")
    controller.update(store)
    assert controller.cache[GATEWAY].versions() == unpoliced


def test_body_comparison_turned_on_and_off_by_a_policy_matches_a_full_translation() -> None:
    """Which clusters carry the body capture filter follows the routes that compare bodies: the
    memo's reused clusters must not keep a filter, or miss one, when only a policy changed."""
    docs = objects(30)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    plain = controller.cache[GATEWAY].versions()
    for route, max_bytes in (("route-3", 1024), ("route-3", 2048), ("route-4", 2048)):
        policy = _mirror_policy(route, "a")
        policy["spec"]["comparison"] = {"body": {"enabled": True, "maxBytes": max_bytes}}
        store = _replace(store, policy)
        controller.update(store)
        assert _entries(controller) == _full_entries(store), (route, max_bytes)
        assert controller.cache[GATEWAY].versions()[CLUSTER] != plain[CLUSTER]
    store = Store.from_objects(o for o in store.objects() if o.kind != "MirrorPolicy")
    controller.update(store)
    assert controller.cache[GATEWAY].versions() == plain


def test_routes_added_changed_and_deleted_one_at_a_time_give_a_full_translations_statuses() -> None:
    """Only the changed route is attached again: attachedRoutes, the route's own status and the
    served bytes must still be what a translation from scratch gives, at every step."""
    docs = objects(40)
    controller = Controller(SnapshotCache())
    store = store_of(docs)
    controller.update(store)
    hits = controller._memo.hits
    gone = store.httproutes[(NAMESPACE, "route-5")]
    added = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-6"))
    added["metadata"]["name"] = "route-new"
    moved = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-8"))
    moved["spec"]["parentRefs"] = [{"name": "gw", "sectionName": "nope"}]  # no longer accepted
    for step in (
        lambda s: Store.from_objects(o for o in s.objects() if o is not gone),
        lambda s: _replace(s, added),
        lambda s: _replace(s, moved),
    ):
        store = step(store)
        controller.update(store)
        fresh = Controller(SnapshotCache())
        fresh.update(store)
        assert controller._unstamped == fresh._unstamped
        assert controller.statuses.keys() == fresh.statuses.keys()
        assert _entries(controller) == _full_entries(store)
    assert controller._memo.hits == hits, "no other route was looked at"
    listener = controller.statuses[("Gateway", NAMESPACE, "gw")]["listeners"][0]
    assert listener["attachedRoutes"] == 39  # 40 - route-5 + route-new - route-8


def test_store_changed_lists_exactly_the_added_removed_and_changed_objects() -> None:
    docs = objects(20)
    store = store_of(docs)
    same_content = store_of(docs)  # every object new, all equal: nothing changed
    assert store.changed(same_content) == {}
    edited = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-3"))
    edited["spec"]["hostnames"] = ["edited.example.com"]
    renamed = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "route-4"))
    renamed["metadata"]["name"] = "route-4-renamed"  # as many routes as before, another key
    other = Store.from_objects(
        [*(o for o in store.objects() if o.name not in ("route-3", "route-4")), *store_of([edited, renamed]).objects()]
    )
    assert store.changed(other) == {
        "httproutes": {(NAMESPACE, "route-3"), (NAMESPACE, "route-4"), (NAMESPACE, "route-4-renamed")}
    }
    fewer = Store.from_objects(o for o in store.objects() if o.name != "route-5")
    assert store.changed(fewer) == {"httproutes": {(NAMESPACE, "route-5")}}
    assert fewer.changed(store) == {"httproutes": {(NAMESPACE, "route-5")}}


def test_the_memo_forgets_deleted_routes_after_a_cold_start_and_after_an_invalidation() -> None:
    """The full path forgets what the memo holds of routes gone (RouteMemo.keep_only), except
    when the memo held nothing before it (a cold start, or after a ReferenceGrant change emptied
    it): then it holds only routes of the store already."""
    docs = objects(6)
    controller = Controller(SnapshotCache())
    controller.update(store_of(docs))
    gateway = copy.deepcopy(next(d for d in docs if d["kind"] == "Gateway"))
    gateway["metadata"]["labels"] = {"changed": "yes"}  # the full path, with the memo kept
    remaining = [d for d in docs if d["metadata"]["name"] != "route-2" and d["kind"] != "Gateway"]
    controller.update(store_of([*remaining, gateway]))
    routes = {("HTTPRoute", NAMESPACE, f"route-{i}") for i in range(6) if i != 2}
    assert set(controller._memo.entries) == routes and set(controller._memo.attached) == routes
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": NAMESPACE},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "x"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }  # fmt: skip
    last = [d for d in remaining if d["metadata"]["name"] != "route-3"]
    controller.update(store_of([*last, grant, gateway]))  # a referenced kind: every route compiled again
    assert controller._memo.misses == 6 + 4  # the first update, then the 4 routes left
    routes.discard(("HTTPRoute", NAMESPACE, "route-3"))
    assert set(controller._memo.entries) == routes and set(controller._memo.attached) == routes
