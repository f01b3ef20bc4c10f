"""The projections CEL rule sets are evaluated on give the verdicts of the full values.

``schema._projection`` hands each rule set only the fields its rules select, so that a rule over
a whole list of HTTPRoute rules does not convert every filter and backendRef. Here every rule
set that has a projection is evaluated twice on every value it meets, projected and whole, over
generated HTTPRoutes and GRPCRoutes, valid and invalid (redirects and rewrites with prefix
paths, duplicate filters, too many matches, bad paths, services without ports...).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi import schema

GROUP = "gateway.networking.k8s.io"

_paths = st.sampled_from(["/", "/a", "//a", "/a/./b", "/a/../b", "/a%2fb", "a", "/a#b", "/a/..", "/ok/x", "^/r.*"])
_path_types = st.sampled_from(["Exact", "PathPrefix", "RegularExpression"])
_names = st.sampled_from(["svc", "mirror", "svc-2"])


def _path_modifier() -> st.SearchStrategy[dict[str, Any]]:
    prefix = st.fixed_dictionaries({"type": st.just("ReplacePrefixMatch")}, optional={"replacePrefixMatch": _paths})
    full = st.fixed_dictionaries({"type": st.just("ReplaceFullPath")}, optional={"replaceFullPath": _paths})
    return st.one_of(prefix, full)


def _backend_ref(port: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, Any] = {"kind": st.sampled_from(["Service", "Other"]), "group": st.sampled_from(["", "x.io"])}
    if port:
        optional["port"] = st.sampled_from([80, 8080])
    return st.fixed_dictionaries({"name": _names}, optional=optional)


def _filter(grpc: bool) -> st.SearchStrategy[dict[str, Any]]:
    header = st.fixed_dictionaries({"set": st.just([{"name": "x-a", "value": "1"}])})
    mirror = st.fixed_dictionaries({"backendRef": _backend_ref()}, optional={"percent": st.sampled_from([0, 50, 100])})
    fields: dict[str, st.SearchStrategy[Any]] = {
        "requestHeaderModifier": header,
        "responseHeaderModifier": header,
        "requestMirror": mirror,
    }
    if not grpc:
        fields["requestRedirect"] = st.fixed_dictionaries({}, optional={"path": _path_modifier()})
        fields["urlRewrite"] = st.fixed_dictionaries({}, optional={"path": _path_modifier()})
    types = {
        "requestHeaderModifier": "RequestHeaderModifier",
        "responseHeaderModifier": "ResponseHeaderModifier",
        "requestMirror": "RequestMirror",
        "requestRedirect": "RequestRedirect",
        "urlRewrite": "URLRewrite",
    }

    @st.composite
    def one(draw: st.DrawFn) -> dict[str, Any]:
        key = draw(st.sampled_from(sorted(fields)))
        type_ = types[draw(st.sampled_from(sorted(fields)))] if draw(st.booleans()) else types[key]
        out = {"type": type_}
        if draw(st.integers(0, 4)):  # mostly with its field, sometimes without
            out[key] = draw(fields[key])
        return out

    return one()


def _rule(grpc: bool) -> st.SearchStrategy[dict[str, Any]]:
    if grpc:
        match = st.fixed_dictionaries(
            {},
            optional={
                "method": st.fixed_dictionaries(
                    {},
                    optional={
                        "service": st.sampled_from(["a.B", "bad service"]),
                        "method": st.sampled_from(["Get", "1x"]),
                    },
                )
            },
        )
    else:
        match = st.fixed_dictionaries(
            {}, optional={"path": st.fixed_dictionaries({"type": _path_types, "value": _paths})}
        )
    filters = st.lists(_filter(grpc), max_size=3)
    backend = st.builds(
        lambda ref, fs: {**ref, **({"filters": fs} if fs is not None else {})},
        _backend_ref(port=False) | _backend_ref(),
        st.none() | st.lists(_filter(grpc), max_size=2),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "matches": st.lists(match, max_size=9),
            "filters": filters,
            "backendRefs": st.lists(backend, max_size=2),
        },
    )


@st.composite
def routes(draw: st.DrawFn) -> dict[str, Any]:
    grpc = draw(st.booleans())
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GRPCRoute" if grpc else "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "parentRefs": draw(st.lists(st.fixed_dictionaries({"name": _names}), min_size=1, max_size=2)),
            "rules": draw(st.lists(_rule(grpc), max_size=17)),
        },
    }


def _outcome(program: Any, value: Any, extended: bool) -> Any:
    try:
        return program.execute(schema._activation(value, extended))
    except schema._CEL_ERRORS:
        return "error"


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every projected rule set evaluates both ways; yields the paths where they disagreed."""
    disagreed: list[str] = []
    projected: set[str] = set()
    real = schema._RuleSet.check

    def check(self: schema._RuleSet, value: Any, path: schema.Path, type_name: str) -> list[Any]:
        if self.projection is not None:
            projected.add(schema._fmt_path(p if isinstance(p, str) else 0 for p in path))
            whole = _outcome(self.batch, value, self.extended)
            part = _outcome(self.batch, self.projection(copy.deepcopy(value)), self.extended)
            if whole != part:
                disagreed.append(f"{schema._fmt_path(path)}: {whole} != {part} for {value!r}")
        return real(self, value, path, type_name)

    monkeypatch.setattr(schema._RuleSet, "check", check)
    yield disagreed
    assert {"spec.rules", "spec.rules[0]", "spec.rules[0].filters"} <= projected  # the test reached them


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=routes())
def test_a_projection_gives_the_verdict_of_the_whole_value(compared: list[str], body: dict[str, Any]) -> None:
    try:
        schema.validate(body)
    except schema.ValidationError:
        pass
    assert compared == []


def test_the_costly_rule_sets_are_projected() -> None:
    """What the speed-up rests on (docs/performance.md): the rule lists and rules are projected."""
    spec = schema._compiled(f"{GROUP}/v1", "HTTPRoute").root.properties["spec"]
    rules = spec.properties["rules"]
    assert rules.rules is not None and rules.rules.projection is not None
    assert rules.items is not None and rules.items.rules is not None and rules.items.rules.projection is not None
    route = {"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "backendRefs": [{"name": "a", "port": 1}]}
    assert rules.rules.projection([route]) == [{"matches": [{}]}]


@pytest.mark.parametrize(
    "rule",
    [
        "self.a == self.b",  # whole objects compared
        "self.a + self.b == 'x'.size()",  # an operand the scan cannot delimit
        "'x' in self.a",  # membership in an object's keys
        "self['a'].n == 1",  # an index by name
        "string(self.a) == 'x'",  # a function that may read a whole object
        "size(self.a) == 2",  # an object's size counts its fields
        "self.a.all(k, k != 'm')",  # iterating an object goes over its fields
        "self.a[self.c.m] == 1",  # an index that is not a number
        "self.c == [self.a][0]",  # a list literal holding an object
        "self.a.n in [self.b][0]",  # membership, in a list holding an object
    ],
)
def test_what_the_scan_cannot_vouch_for_gets_the_whole_value(rule: str) -> None:
    obj = {"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}}
    node = schema._compile_node(
        {"type": "object", "x-kubernetes-validations": [{"rule": rule}], "properties": {"a": obj, "b": obj, "c": obj}},
        strict=True,
    )
    assert node.rules is not None and node.rules.projection is None


def test_a_projection_keeps_what_the_rules_select() -> None:
    obj = {"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}}
    node = schema._compile_node(
        {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.a.n == self.b.n && has(self.c)"}],
            "properties": {"a": obj, "b": obj, "c": obj, "d": obj},
        },
        strict=True,
    )
    assert node.rules is not None and node.rules.projection is not None
    value = {k: {"n": 1, "m": 2} for k in "abcd"}
    assert node.rules.projection(value) == {"a": {"n": 1}, "b": {"n": 1}, "c": {"n": 1}}
