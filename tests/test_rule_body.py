"""Rules with the same filters and backendRefs are compiled once per translation
(rules.rule_body): what every route compiles to must be what it compiles to alone, with every
rule compiled afresh, on generated routes (test_fuzz's generator: repeated filters, missing and
cross-namespace Services, refused values, junk) and on the benchmark workload."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

import test_fuzz as fuzz
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.grpcroutes import grpc_route_rules
from controlplane.gatewayapi.model import K8sObject, from_dict
from controlplane.gatewayapi.refs import BackendResolver, Uses
from controlplane.gatewayapi.rules import SHADOW_HOST_SUFFIX_ANNOTATION, Compiled, route_rules
from controlplane.gatewayapi.store import Store
from controlplane.ir import Backend
from controlplane.providers.files import parse_text


class _Forgetful(dict[tuple[Any, ...], Any]):
    """A rule cache that keeps nothing: every rule is compiled."""

    def __setitem__(self, key: tuple[Any, ...], value: Any) -> None:
        pass


class _Alone(BackendResolver):
    """Compiles every rule afresh and notes every backend it resolves: what a route uses."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.rules = _Forgetful()
        self.resolved: dict[str, Backend] = {}

    def resolve(self, route: K8sObject[Any], ref: dict[str, Any], *, mirror: bool = False) -> Any:
        found = super().resolve(route, ref, mirror=mirror)
        if found[0] is not None:
            self.resolved[found[0].name] = found[0]
        return found


def _compare(store: Store) -> int:
    """Compile every route with one shared resolver and alone; returns the rule bodies compiled
    by the shared one."""
    shared = BackendResolver(store)
    routes: list[tuple[Callable[[BackendResolver, Any], Compiled], K8sObject[Any]]]
    routes = [(route_rules, r) for r in store.httproutes.values()]
    routes += [(grpc_route_rules, r) for r in store.grpcroutes.values()]
    for compiler, route in routes:
        alone = _Alone(store)
        shared.bodies = []
        assert compiler(shared, route) == compiler(alone, route), route.key
        # What RouteMemo keeps per route: merged once per sequence of bodies (the resolver's uses_of).
        merged = shared.uses_of(shared.bodies)
        assert merged == Uses.of(shared.bodies), route.key
        assert merged.backends == alone.resolved, route.key
    return len(shared.rules)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz.documents())
def test_generated_routes_compile_as_they_do_alone(example: tuple[bool, list[Any]]) -> None:
    objects, _ = parse_text(yaml.safe_dump_all(example[1]), "fuzz.yaml")
    _compare(Store.from_objects(objects.values()))


def test_the_workload_compiles_as_it_does_alone_and_each_rule_body_once() -> None:
    """With the same rules in another namespace (the Services are not there) and with the
    shadow-suffix annotation, which the rules' compilation reads besides the rules."""
    from benchmarks.change_latency import http_routes
    from benchmarks.workload import objects

    docs = http_routes(320)
    elsewhere, suffixed = copy.deepcopy(docs[0]), copy.deepcopy(docs[1])
    elsewhere["metadata"]["namespace"] = "other"
    suffixed["metadata"] |= {"name": "suffixed", "annotations": {SHADOW_HOST_SUFFIX_ANNOTATION: "true"}}
    store = Store.from_objects(from_dict(schema.validate(o)) for o in objects(0) + docs + [elsewhere, suffixed])
    # 320 rules of 50 distinct (backend, mirror) pairs, then 16 of them in another namespace and
    # 16 with the annotation.
    assert _compare(store) == 50 + 16 + 16


def test_rules_holding_the_same_objects_compile_as_they_do_alone() -> None:
    """The Kubernetes provider holds equal parts once (jsonshare), so rules of routes in another
    namespace, or with the shadow-suffix annotation, hold the very same ``filters`` and
    ``backendRefs`` objects: rule_body must still tell them apart by what else it reads (a
    key by the objects' identity alone would not)."""
    from benchmarks.change_latency import http_routes
    from benchmarks.workload import objects
    from controlplane.providers.jsonshare import Sharer

    docs = http_routes(320)
    elsewhere, suffixed = copy.deepcopy(docs[0]), copy.deepcopy(docs[1])
    elsewhere["metadata"]["namespace"] = "other"
    suffixed["metadata"] |= {"name": "suffixed", "annotations": {SHADOW_HOST_SUFFIX_ANNOTATION: "true"}}
    mixed = copy.deepcopy(docs[2])  # its first rule: the filters of one rule, the backends of another
    mixed["metadata"]["name"] = "mixed"
    mixed["spec"]["rules"][0]["backendRefs"] = copy.deepcopy(docs[2]["spec"]["rules"][1]["backendRefs"])
    sharer = Sharer()
    first = [docs[0], elsewhere, docs[1], suffixed, docs[2], mixed]
    valid = [from_dict(sharer.share(schema.validate(o))) for o in first]
    valid += [from_dict(sharer.share(schema.validate(o))) for o in objects(0) + docs[3:]]
    assert valid[0].spec["rules"][0]["filters"] is valid[1].spec["rules"][0]["filters"]
    assert valid[2].spec["rules"][0]["backendRefs"] is valid[3].spec["rules"][0]["backendRefs"]
    assert valid[4].spec["rules"][0]["filters"] is valid[5].spec["rules"][0]["filters"]
    assert _compare(Store.from_objects(valid)) == 50 + 16 + 16 + 1


def test_the_content_key_tells_apart_what_compiles_apart() -> None:
    """rules.content_key: equal for equal values of equal types, different otherwise (a weight
    of ``1``, ``True`` or ``1.0``, a port of ``80`` or ``"80"``), with a ``repr`` for what
    marshal cannot write (a YAML timestamp), never equal to a marshalled value."""
    import datetime

    from controlplane.gatewayapi.rules import content_key

    ref: dict[str, Any] = {"name": "svc", "port": 80, "weight": 1}
    assert content_key([dict(ref)]) == content_key([{"name": "svc", "port": 80, "weight": 1}])
    variants: list[Any] = [
        ref,
        ref | {"weight": True},
        ref | {"weight": 1.0},
        ref | {"port": "80"},
        ref | {"name": "svc2"},
    ]
    variants += [ref | {"extra": None}, [ref], (ref,), ref | {"when": datetime.date(2024, 1, 1)}]
    variants += [ref | {"when": "datetime.date(2024, 1, 1)"}, repr(ref)]
    keys = [content_key(v) for v in variants]
    assert len(set(keys)) == len(keys), keys
    dated = ref | {"when": datetime.date(2024, 1, 1)}
    assert content_key(dated) == content_key(copy.deepcopy(dated))
