"""ir.positional, the cold translation's way to make a route, a match and a rule, makes the
dataclass's own instances."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from controlplane import ir
from controlplane.gatewayapi import rules
from controlplane.gatewayapi.filters import RuleFilters

ROUTE = {
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
MATCH = {
    "path_type": "RegularExpression",
    "path": "/a.*",
    "headers": (ir.StringMatch("x-a", "1"),),
    "query_params": (ir.StringMatch("q", "2", True),),
    "method": "GET",
}
RULE = {
    "index": 3,
    "name": "named",
    "matches": (ir.Match("Exact", "/a"),),
    "backends": (ir.WeightedBackend("svc", 3),),
    "filters": RuleFilters(),
    "timeout_ms": 5,
    "backend_timeout_ms": 2,
    "direct_status": 500,
    "ranks": ((1, 2, 3),),
}
CASES = [
    (ir.Route, ir.make_route, ROUTE),
    (ir.Match, ir.make_match, MATCH),
    (rules.Rule, rules._make_rule, RULE),
]


@pytest.mark.parametrize(("cls", "make", "values"), CASES)
def test_positional_takes_every_field_in_order(cls: type[Any], make: Any, values: dict[str, Any]) -> None:
    """A field added to the class is a parameter of its maker (none can be left unset)."""
    assert list(inspect.signature(make).parameters) == [f.name for f in dataclasses.fields(cls)] == list(values)


@pytest.mark.parametrize(("cls", "make", "values"), CASES)
def test_positional_makes_what_the_constructor_makes(cls: type[Any], make: Any, values: dict[str, Any]) -> None:
    made, fast = cls(**values), make(*values.values())
    assert type(fast) is cls

    def fields(obj: Any) -> dict[str, object]:  # vars() of an object with slots
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    def hashed(obj: Any) -> object:  # a Rule holds RuleFilters, which hold dicts
        try:
            return hash(obj)
        except TypeError as e:
            return str(e)

    assert fast == made and hashed(fast) == hashed(made) and fields(fast) == fields(made) == values
    for field, value in values.items():  # each field its own: none is taken for another
        other = make(*(None if f == field else v for f, v in values.items()))
        assert other != made and getattr(other, field) is None and value is not None
    first = next(iter(values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, first, "other")
    with pytest.raises(TypeError):
        make(*values.values(), None)
    assert dataclasses.replace(fast, **{first: values[first]}) == made


def test_positional_refuses_a_class_it_cannot_make() -> None:
    """The maker fills an instance of a plain twin with the same slots and makes it a ``cls``
    (setting ``__class__``): only a dataclass whose slots are its fields, on ``object``, is laid
    out as that twin is."""

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int

    for cls in (Unslotted, Derived):
        with pytest.raises(TypeError):
            ir.positional(cls)


def test_by_backends_and_mirrors_keys_by_both_tuples() -> None:
    """ir.by_backends_and_mirrors serves a virtual host what it computed for another whose
    routes hold the same ``backends`` and ``mirrors`` objects in the same order. Both functions
    it wraps (the route tables' backends in use, the xDS build's mirror usage) read both:
    virtual hosts sharing one of the two objects and not the other, or neither but equal in
    value, and virtual hosts of several routes sharing the backends of each route but not the
    mirrors, must each get what the function gives them."""
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
    hosts += [ir.VirtualHost("two-again", (), (*hosts[0].routes, *hosts[3].routes))]
    hosts += [ir.VirtualHost("two-swapped", (), (*hosts[3].routes, *hosts[0].routes))]
    hosts += [ir.VirtualHost("two-mirrors", (), (*hosts[1].routes, *hosts[2].routes))]
    hosts += [ir.VirtualHost("two-backends", (), (*hosts[0].routes, *hosts[2].routes))]
    for of in (backends_of, vhost_usage):
        cached = ir.by_backends_and_mirrors(of)
        for vh in hosts + hosts[::-1]:
            assert cached(vh) == of(vh), (of.__name__, vh.name)
