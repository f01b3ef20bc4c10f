"""An EndpointSlice change costs the routes of its Service, not every route: the endpoint-only
fast path (translator.with_endpoints) brings RouteMemo's backends up to date, and any other
slice change compiles again only the routes that looked the slice's Service up. Either way the
next translation, whatever path it takes, must be exactly a translation from scratch."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks.workload import NAMESPACE, objects, route
from controlplane.controller import Controller
from controlplane.gatewayapi.store import Store
from test_incremental import _replace
from test_incremental_services import _assert_as_from_scratch, _started, _without


def _slice(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(d for d in docs if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == f"{service}-1")
    )


def _moved(docs: list[dict[str, Any]], service: str, address: str) -> dict[str, Any]:
    """The Service's slice with its one endpoint at ``address``."""
    moved = _slice(docs, service)
    moved["endpoints"][0]["addresses"] = [address]
    return moved


def _fqdn(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    """The Service's slice naming a host instead: a DNS cluster."""
    fqdn = _slice(docs, service)
    fqdn["addressType"] = "FQDN"
    fqdn["endpoints"] = [{"addresses": ["backend.example.com"]}]
    return fqdn


def _step(controller: Controller, store: Store) -> int:
    """Update, check against a translation from scratch; returns how many routes were compiled."""
    misses = controller._memo.misses
    controller.update(store)
    _assert_as_from_scratch(controller, store)
    return controller._memo.misses - misses


def test_a_route_change_after_an_endpoint_change_compiles_one_route() -> None:
    docs = objects(200)  # svc-3 is the backend of route-3, -53, -103 and -153
    controller, store = _started(docs)
    fast = controller.endpoint_updates
    assert _step(controller, store := _replace(store, _moved(docs, "svc-3", "10.9.9.9"))) == 0
    assert controller.endpoint_updates == fast + 1, "the endpoint-only fast path"
    assert _step(controller, store := _replace(store, route(4, tag="-a"))) == 1, "a route of another Service"
    assert _step(controller, store := _replace(store, route(3, tag="-b"))) == 1


def test_the_full_path_after_an_endpoint_change_gets_the_current_endpoints() -> None:
    """A Gateway change translates every route, replaying the compiled ones and their backends;
    so does a route attached again after the Gateway went to another controller meanwhile."""
    docs = objects(100)
    controller, store = _started(docs)
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    store = _replace(store, _moved(docs, "svc-3", "10.9.9.9"))
    assert _step(controller, store) == 0
    wider = copy.deepcopy(gateway)
    wider["spec"]["listeners"].append({"name": "other", "port": 8001, "protocol": "HTTP"})
    assert _step(controller, store := _replace(store, wider)) == 0, "compiled rules are kept"
    detached = copy.deepcopy(gateway)
    detached["spec"]["gatewayClassName"] = "someone-else"
    _step(controller, store := _replace(store, detached))
    _step(controller, store := _replace(store, _moved(docs, "svc-3", "10.8.8.8")))
    _step(controller, store := _replace(store, _moved(docs, "mirror-3", "10.7.7.7")))
    assert _step(controller, store := _replace(store, gateway)) == 0


def test_a_slice_that_makes_a_dns_cluster_compiles_only_its_services_routes() -> None:
    docs = objects(200)
    controller, store = _started(docs)
    fast = controller.endpoint_updates
    assert _step(controller, store := _replace(store, _fqdn(docs, "svc-3"))) == 4
    assert _step(controller, store := _replace(store, route(5, tag="-a"))) == 1
    assert _step(controller, store := _replace(store, _moved(docs, "svc-3", "10.9.9.9"))) == 4, "back to EDS"
    assert _step(controller, store := _replace(store, route(53, tag="-a"))) == 1
    assert controller.endpoint_updates == fast, "a DNS cluster carries its endpoints: no fast path"


def test_a_slice_added_and_removed() -> None:
    docs = objects(200)
    controller, store = _started(docs)
    second = _moved(docs, "mirror-3", "10.9.9.9")
    second["metadata"]["name"] = "mirror-3-2"
    assert _step(controller, store := _replace(store, second)) == 0
    assert _step(controller, store := _without(store, "EndpointSlice", NAMESPACE, "mirror-3-1")) == 0
    assert _step(controller, store := _replace(store, route(3, tag="-a"))) == 1
    assert _step(controller, store := _without(store, "EndpointSlice", NAMESPACE, "mirror-3-2")) == 0, "none left"
    assert _step(controller, store := _replace(store, route(4, tag="-a"))) == 1
    fqdn = _fqdn(docs, "mirror-3")
    fqdn["metadata"]["name"] = "mirror-3-9"
    assert _step(controller, store := _replace(store, fqdn)) == 4, "a DNS cluster now"
    assert _step(controller, store := _without(store, "EndpointSlice", NAMESPACE, "mirror-3-9")) == 4


def test_a_slice_and_a_route_changed_together() -> None:
    """Not the fast path: the route, and the routes of the slice's Service, compiled again."""
    docs = objects(200)
    controller, store = _started(docs)
    both = _replace(_replace(store, _moved(docs, "svc-3", "10.9.9.9")), route(7, tag="-a"))
    assert _step(controller, both) == 1 + 4
    assert _step(controller, _replace(both, route(8, tag="-a"))) == 1
