"""The endpoint-only fast path: an EndpointSlice change rebuilds and re-serializes only the
ClusterLoadAssignments it affects, and gives exactly what a full translation would."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks.workload import NAMESPACE, objects
from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.store import Store
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

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
    return controller.cache.get(GATEWAY).versions()  # type: ignore[union-attr]


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
    assert controller.cache.get(GATEWAY).versions() == full_translation(store)  # type: ignore[union-attr]
