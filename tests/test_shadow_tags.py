"""Shadow testing's tag table (controlplane/xds/accesslog.py RouteTags): what the receiver finds a
primary entry's rule and mirrors by, now that Envoy's route table carries only the sampling
threshold. Kept up to date by what changed, it must always equal a table made afresh."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from benchmarks.workload import NAMESPACE, objects, route
from controlplane import ir
from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.shadow.tagging import METADATA_KEY, MIRRORED_SUFFIX, RouteTag, TagTables, threshold
from controlplane.xds.accesslog import RouteTags, route_tag
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.translator import XdsOptions, build_resources

GATEWAY = f"{NAMESPACE}/gw"


def store_of(docs: list[dict[str, Any]]) -> Store:
    return Store.from_objects(from_dict(schema.validate(d)) for d in docs)


def every_tag(gateway: ir.GatewayIR) -> dict[str, RouteTag]:
    """The table made the slow way: every mirrored route of every virtual host."""
    return {
        r.name: route_tag(r)
        for lst in gateway.listeners
        for chain in lst.chains
        for vh in chain.virtual_hosts
        for r in vh.routes
        if r.mirrors
    }


class Published:
    def __init__(self, controller: Controller) -> None:
        self.tables: list[TagTables] = []
        controller.tag_listeners.append(self.tables.append)

    @property
    def last(self) -> Mapping[str, RouteTag]:
        return self.tables[-1][GATEWAY]


def test_the_table_follows_edits_and_equals_one_made_afresh() -> None:
    docs = objects(40)
    controller = Controller(SnapshotCache())
    published = Published(controller)
    controller.update(store_of(docs))
    first = published.last
    assert first == every_tag(controller.gateways[GATEWAY]) and len(first) == 40

    edits: list[tuple[str, list[dict[str, Any]]]] = []
    percent = copy.deepcopy(docs)
    [r4] = [d for d in percent if d["metadata"]["name"] == "route-4"]
    r4["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 3
    edits.append(("a mirror's fraction changed", percent))
    edits.append(("a route (and its virtual host) added", [*percent, route(40)]))
    edits.append(("a route removed", [d for d in edits[-1][1] if d["metadata"]["name"] != "route-3"]))
    shared = copy.deepcopy(edits[-1][1])
    [r7] = [d for d in shared if d["metadata"]["name"] == "route-7"]
    r7["spec"]["hostnames"] = ["host-7.example.com", "host-8.example.com"]
    edits.append(("a route in two virtual hosts", shared))
    one = copy.deepcopy(shared)
    [r7] = [d for d in one if d["metadata"]["name"] == "route-7"]
    r7["spec"]["hostnames"] = ["host-8.example.com"]
    edits.append(("... then taken out of one of them", one))

    for what, edited in edits:
        controller.update(store_of(edited))
        gateway = controller.gateways[GATEWAY]
        assert published.last == every_tag(gateway) == RouteTags().table(gateway), what
    names = set(published.last)
    assert f"httproute/{NAMESPACE}/route-3/rule/0/match/0" not in names
    assert f"httproute/{NAMESPACE}/route-7/rule/0/match/0" in names
    assert published.last[f"httproute/{NAMESPACE}/route-4/rule/0/match/0"].mirrors[0].always is False
    assert first[f"httproute/{NAMESPACE}/route-4/rule/0/match/0"].mirrors[0].always is True, "handed out: never changed"


def test_an_unchanged_gateway_hands_out_the_same_table() -> None:
    """The same object, not only equal contents: that is how the receiver tells a new version,
    whose predecessor it holds for late entries (pairing.Pairer.set_tables)."""
    docs = objects(20)
    controller = Controller(SnapshotCache())
    published = Published(controller)
    controller.update(store_of(docs))
    controller.update(store_of(copy.deepcopy(docs)))
    assert len(published.tables) == 2 and published.tables[0][GATEWAY] is published.tables[1][GATEWAY]
    edited = copy.deepcopy(docs)
    edited[-1]["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 3
    controller.update(store_of(edited))
    assert published.tables[2][GATEWAY] is not published.tables[1][GATEWAY]


def test_every_route_envoy_samples_for_the_log_has_a_tag_by_its_name() -> None:
    """The receiver looks an entry's route name up without its ``…/mirrored`` segment, or without
    one more (a GRPCRoute rule's second route, ``…/grpc/mirrored``): every route that mirrors must
    be found so. Rules sampling every id (the default) carry no threshold, which Envoy would build
    on each route update (the logger knows them by the name), and no route carries the JSON tag
    unless asked."""
    docs = objects(10)
    controller = Controller(SnapshotCache())
    published = Published(controller)
    controller.update(store_of(docs))
    gateway = controller.gateways[GATEWAY]
    table = published.last
    for json_tags in (False, True):
        resources = build_resources(gateway, XdsOptions(shadow_tags_in_routes=json_tags))
        routes = [r for config in resources.routes.values() for vh in config.virtual_hosts for r in vh.routes]
        mirrored = [r for r in routes if r.route.request_mirror_policies]
        assert len(mirrored) == len(table)  # HTTPRoutes: one mirrored route per rule
        assert {r.name for r in mirrored} == {r.name for r in routes if r.name.endswith(MIRRORED_SUFFIX)}
        for r in mirrored:
            name = r.name.removesuffix(MIRRORED_SUFFIX)
            tag = table.get(name) or table.get(name.rpartition("/")[0])
            assert tag is not None, r.name
            if json_tags:
                meta = r.metadata.filter_metadata[METADATA_KEY]
                assert RouteTag.decode(meta.fields["tag"].string_value) == tag
                assert meta.fields["below"].string_value == threshold(100)
        if not json_tags:
            assert not [r.name for r in routes if METADATA_KEY in r.metadata.filter_metadata]


def test_routes_with_other_mirrors_get_their_own_mirror_tags() -> None:
    """RouteTags makes the mirrors' part of a tag once for every route with the same mirrors:
    routes alike in all else, through one table, must each still get route_tag's tag."""
    from types import SimpleNamespace
    from typing import cast

    def mirror(backend: str, **comparison: Any) -> ir.Mirror:
        return ir.Mirror(backend, 1, 2, False, comparison=ir.Comparison(**comparison))

    variants = [
        (mirror("m-a"),),
        (mirror("m-b"),),
        (mirror("m-a", sample_percent=7),),
        (mirror("m-a", headers=("etag",)),),
        (mirror("m-a", body=True),),
        (mirror("m-a", body=True, body_limit_bytes=1024),),
        (mirror("m-a", body=True, ignore_json_paths=("$.t",)),),
        (ir.Mirror("m-a", 2, 2, False),),
        (mirror("m-a"), mirror("m-b")),
    ]
    hosts = [
        ir.VirtualHost(
            f"vh{i}", ("a.example.com",), (ir.Route(name=f"r{i}", match=ir.Match(), mirrors=m, source="HTTPRoute n/r"),)
        )
        for i, m in enumerate(variants * 2)
    ]
    chain = SimpleNamespace(name="8000", virtual_hosts=tuple(hosts))
    gateway = cast(ir.GatewayIR, SimpleNamespace(listeners=[SimpleNamespace(chains=[chain])]))
    assert dict(RouteTags().table(gateway)) == every_tag(gateway)
