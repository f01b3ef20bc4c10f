"""ir.Route.of, the cold translation's way to make a route, makes the dataclass's own route."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from controlplane import ir


def test_route_of_takes_every_field_in_order() -> None:
    """A field added to ir.Route and not to Route.of fails here (it would be left unset)."""
    params = list(inspect.signature(ir.Route.of).parameters)
    assert params == [f.name for f in dataclasses.fields(ir.Route)]


def test_route_of_makes_what_the_constructor_makes() -> None:
    values = {
        "name": "httproute/ns/r/rule/0/match/0",
        "match": ir.Match("Exact", "/a", (ir.StringMatch("x-a", "1"),)),
        "backends": (ir.WeightedBackend("svc", 3),),
        "mirrors": (ir.Mirror("mirror"),),
        "request_headers": ir.HeaderMods(set=(("a", "b"),)),
        "response_headers": ir.HeaderMods(remove=("c",)),
        "direct_status": 503,
        "redirect": ir.Redirect(port=8443),
        "rewrite": ir.Rewrite(hostname="h"),
        "cors": ir.Cors(allow_origins=("*",)),
        "timeout_ms": 5,
        "backend_timeout_ms": 2,
        "stat_prefix": "p",
        "kind": "GRPCRoute",
        "source": "GRPCRoute ns/r",
        "rule": "named",
    }
    made, fast = ir.Route(**values), ir.Route.of(*values.values())  # type: ignore[arg-type]
    assert type(fast) is ir.Route

    def fields(route: ir.Route) -> dict[str, object]:  # vars() of a route with slots
        return {f.name: getattr(route, f.name) for f in dataclasses.fields(route)}

    assert fast == made and hash(fast) == hash(made) and fields(fast) == fields(made) == values
    for field, value in values.items():  # each field its own: none is taken for another
        other = ir.Route.of(*(None if f == field else v for f, v in values.items()))  # type: ignore[arg-type]
        assert other != made and getattr(other, field) is None and value is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "other"  # type: ignore[misc]
    assert dataclasses.replace(fast, rule="0") == dataclasses.replace(made, rule="0")


def test_by_backends_and_mirrors_keys_by_both_tuples() -> None:
    """ir.by_backends_and_mirrors serves a one-route virtual host what it computed for another
    holding the same ``backends`` and ``mirrors`` objects. Both functions it wraps (the route
    tables' backends in use, the xDS build's mirror usage) read both: virtual hosts sharing one
    of the two objects and not the other, or neither but equal in value, must each get what the
    function gives them."""
    from controlplane.gatewayapi.rules import backends_of
    from controlplane.xds.encoded import vhost_usage

    match = ir.Match("PathPrefix", "/")
    backends = [(ir.WeightedBackend("svc-a", 1),), (ir.WeightedBackend("svc-b", 1),)]
    mirrors = [
        (ir.Mirror("mirror-a", 1, 2, False),),
        (ir.Mirror("mirror-b", 1, 2, False, comparison=ir.Comparison(sample_percent=7, body=True, headers=("x",))),),
    ]
    hosts = [
        ir.VirtualHost(f"vh{i}", ("a.example.com",), (ir.Route(f"r{i}", match, b, m),))
        for i, (b, m) in enumerate((b, m) for b in backends for m in mirrors)
    ]
    hosts += [ir.VirtualHost("copy", (), (ir.Route("c", match, (*backends[1],), (*mirrors[1],)),))]
    hosts += [ir.VirtualHost("two", (), (*hosts[0].routes, *hosts[3].routes))]
    for of in (backends_of, vhost_usage):
        cached = ir.by_backends_and_mirrors(of)
        for vh in hosts + hosts[::-1]:
            assert cached(vh) == of(vh), (of.__name__, vh.name)
