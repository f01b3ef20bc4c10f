"""A rule set's batch with ``self``'s fields as variables (``schema._flat_self``,
docs/performance.md): it must give the verdicts of its rules as written, evaluated by the CEL
library on ``self``, whatever the fields hold or lack. Any disagreement fails."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.cellib import cel
from test_schema_regex import STRINGS, TYPES, crd_rule_sets, path_errors

FLAT = crd_rule_sets(lambda rules: rules.flat is not None)  # with a flat form


def test_the_path_rule_sets_are_flat() -> None:
    """What the speed-up rests on: the path match's eleven rules, evaluated for every path."""
    assert {where: [f for f, _ in rules.fields] for where, rules in FLAT if where.endswith("].path")} == {
        "HTTPRoute v1.spec.rules[].matches[].path": ["type", "value"],
        "HTTPRoute v1beta1.spec.rules[].matches[].path": ["type", "value"],
    }


# What a field may hold: the strings the path rules test, numbers either side of the mirror
# fraction's bounds and floats, the TLS modes, lists and objects (certificateRefs, options), nothing.
SCALARS = st.one_of(
    STRINGS,
    STRINGS.map(lambda s: f"/{s}"),
    TYPES,
    st.sampled_from(["Terminate", "Passthrough", "", "core", "gateway.networking.k8s.io"]),
    st.integers(-2, 1_000_001),
    st.floats(),
    st.booleans(),
    st.none(),
)
ANY = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3), max_leaves=6
)


def run(program: Any, variables: Any) -> Any:
    try:
        return program.execute(variables)
    except schema._CEL_ERRORS:
        return "error"


@pytest.mark.parametrize(("where", "rules"), FLAT, ids=[w for w, _ in FLAT])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_flat_batch_gives_the_verdicts_of_its_rules_as_written(where: str, rules: Any, data: st.DataObject) -> None:
    """The flat batch (``evaluate``) against the same rules compiled as written, on ``self``: the
    same results, or both raise (then every rule is evaluated again as written)."""
    value = data.draw(st.fixed_dictionaries({}, optional=dict.fromkeys((f for f, _ in rules.fields), ANY)))
    written = cel.compile("[" + ", ".join(f"({r.source})" for r in rules.rules) + "]")
    try:
        flat = rules.evaluate(value)
    except schema._CEL_ERRORS:
        flat = "error"
    assert flat == run(written, schema._activation(value, rules.extended)), (where, value)


@pytest.mark.parametrize(
    "source",
    [
        "has(self.a) && self.b == 1",  # has() needs a field selection
        "self.?a.orValue(1) == 1",  # an optional selection
        "self['a'] == 1",  # an index by name
        "size(self) == 2",  # self whole
        "self.all(k, k != 'a')",  # a macro on self
        "self.a == 1 && self == {'a': 1}",  # self whole, beside a field
        "x. self.a == 1",  # a field named self (of x), spelt with a space
    ],
)
def test_self_used_otherwise_keeps_the_batch(source: str) -> None:
    assert schema._flat_self(source) is None


def test_strings_are_left_as_they_are() -> None:
    flat = schema._flat_self("self.a == 'self.a' && self.b.startsWith(\"self\") && self.a != r'x\\' + 'self.b'")
    assert flat is not None
    program, fields = flat
    assert fields == (("a", "__self0"), ("b", "__self1"))
    assert program.execute({"__self0": "self.a", "__self1": "self-x"}) is True
    assert program.execute({"__self0": "self.a", "__self1": "x"}) is False


def test_a_flat_path_rule_still_words_its_errors() -> None:
    """A rule the flat batch finds false is reported with its message and path, as before."""
    assert path_errors("Exact", "/a//b/..") == [
        "spec.rules[0].matches[0].path: Invalid value: \"object\": must not contain '//' when type one of "
        "['Exact', 'PathPrefix']",
        "spec.rules[0].matches[0].path: Invalid value: \"object\": must not end with '/..' when type one of "
        "['Exact', 'PathPrefix']",
    ]
