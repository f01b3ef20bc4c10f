"""Which listeners a parentRef may attach to is worked out once per translation for each distinct
(Gateway, route kind, route namespace, sectionName, port) (translator._allowed), the parentRefs
of a route once per distinct (route kind, route namespace, parentRefs) (translator._parents),
and a parent's conditions once per distinct Condition objects (translator._Shared.conditions):
every route's status must be what it is when the route is translated alone, for routes that
differ from one another in exactly one of those. Leaving the kind, the namespace or the
parentRefs out of the _parents key, or keying the conditions by their types, makes it fail."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.providers.jsonshare import Sharer

GW = "gateway.networking.k8s.io/v1"


def _route(kind: str, namespace: str, name: str, gateway: str = "gw", **ref: Any) -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": gateway, "namespace": "a", **ref}],
            "rules": [{"backendRefs": [{"name": "svc", "port": 8080}]}],
        },
    }


def _base() -> list[dict[str, Any]]:
    listener_kinds = {"http": "HTTPRoute", "grpc": "GRPCRoute"}
    return [
        {
            "apiVersion": GW,
            "kind": "GatewayClass",
            "metadata": {"name": "mirrorplane"},
            "spec": {"controllerName": "mirrorplane.io/gateway-controller"},
        },
        {
            "apiVersion": GW,
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "a"},
            "spec": {
                "gatewayClassName": "mirrorplane",
                "listeners": [
                    {
                        "name": name,
                        "port": port,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": mode}, "kinds": [{"kind": listener_kinds[name]}]},
                    }
                    for name, port, mode in (("http", 80, "Same"), ("grpc", 81, "All"))
                ],
            },
        },
        {
            "apiVersion": GW,
            "kind": "Gateway",
            "metadata": {"name": "gw2", "namespace": "a"},
            "spec": {
                "gatewayClassName": "mirrorplane",
                "listeners": [
                    {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
                ],
            },
        },
        *(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "svc", "namespace": ns},
                "spec": {"ports": [{"port": 8080}]},
            }
            for ns in ("a", "b")
        ),
    ]


@pytest.mark.parametrize("shared", [False, True])
def test_each_route_attaches_as_it_does_alone(shared: bool) -> None:
    """``shared``: equal parts held once, as the Kubernetes provider holds them (jsonshare), so
    that routes of either kind and of either namespace hold the very same parentRefs list (the
    translator looks them up by identity first)."""
    routes = [
        _route("HTTPRoute", "a", "plain"),  # accepted by http
        _route("HTTPRoute", "b", "other-namespace"),  # http allows its own namespace only
        _route("HTTPRoute", "b", "other-gateway", gateway="gw2"),  # whose listener allows all
        _route("GRPCRoute", "a", "grpc"),  # accepted by grpc
        _route("GRPCRoute", "b", "grpc-other-namespace"),  # grpc allows all namespaces
        _route("HTTPRoute", "a", "section-grpc", sectionName="grpc"),  # grpc takes GRPCRoutes only
        _route("HTTPRoute", "a", "section-http", sectionName="http"),
        _route("HTTPRoute", "a", "section-none", sectionName="none"),
        _route("HTTPRoute", "a", "port-80", port=80),
        _route("HTTPRoute", "a", "port-81", port=81),
        _route("HTTPRoute", "a", "port-82", port=82),
        _route("HTTPRoute", "a", "port-true", port=True),  # (not valid; equal to 1, named apart)
        _route("HTTPRoute", "a", "port-1", port=1),
        _route("HTTPRoute", "a", "section-true", sectionName=True),  # (not valid either)
        _route("HTTPRoute", "a", "section-1", sectionName=1),
        _route("HTTPRoute", "a", "section-http-port-81", sectionName="http", port=81),
    ]
    if shared:
        sharer = Sharer()
        routes = [sharer.share(doc) for doc in routes]
        assert routes[0]["spec"]["parentRefs"] is routes[1]["spec"]["parentRefs"] is routes[3]["spec"]["parentRefs"]
    together = translate(Store.from_objects(from_dict(o) for o in _base() + routes)).statuses
    outcomes = set()
    for doc in routes:
        alone = translate(Store.from_objects(from_dict(o) for o in [*_base(), doc])).statuses
        key = (doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        assert together[key] == alone[key], key
        outcomes.add(repr(together[key]["parents"][0]["conditions"][0]))
    assert len(outcomes) >= 6  # the routes do attach differently
