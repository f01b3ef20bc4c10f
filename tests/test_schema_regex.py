"""A rule set's batch has RE2 search for its ``matches()``, each pattern compiled once, in a
variable set beforehand (``schema._Re2Match``, docs/performance.md): the batch must give the
verdicts of its rules as written, evaluated by the CEL library, on strings near what the CRDs'
patterns test. Any disagreement fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.cellib import cel

# Strings near what the patterns test: their own characters, the ones around them, line breaks
# (``$`` and a final newline), non-ASCII letters (case folding, Unicode classes), percent escapes.
ALPHABET = st.sampled_from(list("azAZ09_-./%#?&'()*+,;=:@~!$ \n\r\téßKſ[]{}^\\|\"`") + ["\u212a", "\x00", "%2f", "%G1"])
STRINGS = st.lists(ALPHABET, max_size=24).map("".join)
VALUES = st.one_of(STRINGS, STRINGS.map(lambda s: f"/{s}"), STRINGS.map(lambda s: f"*.{s}\n"), st.integers(), st.none())
# What the rules test before they call matches().
TYPES = st.sampled_from(["Exact", "PathPrefix", "RegularExpression", "Hostname", "IPAddress"])


def crd_rule_sets(keep: Callable[[Any], bool]) -> list[tuple[str, Any]]:
    """Every rule set of the CRDs that ``keep`` keeps, with where it is."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any, where: str) -> None:
        if node is None:
            return
        if node.rules is not None and keep(node.rules):
            found.append((where, node.rules))
        for name, child in node.properties.items():
            walk(child, f"{where}.{name}")
        walk(node.items, f"{where}[]")
        walk(node.additional, f"{where}{{}}")

    for kind in schema._CRD_FILES:
        crd = schema._crd(kind)
        for version in crd.versions:
            walk(schema._compiled(f"{crd.group}/{version}", kind).root, f"{kind} {version}")
    return sorted(found, key=lambda item: item[0])


RULE_SETS = crd_rule_sets(lambda rules: bool(rules.matches))  # whose batch searches with RE2


def test_every_matches_of_the_crds_searches_with_re2() -> None:
    assert {where: len(rules.matches) for where, rules in RULE_SETS} == {
        "GRPCRoute v1.spec.rules[].matches[].method": 2,  # the service's pattern is case-insensitive: (?i)
        "Gateway v1.spec.addresses[]": 1,
        "Gateway v1beta1.spec.addresses[]": 1,
        "HTTPRoute v1.spec.rules[].matches[].path": 1,
        "HTTPRoute v1beta1.spec.rules[].matches[].path": 1,
    }


def value_for(rules: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the fields the batch's ``matches()`` read (a string, something else, or
    absent) and a type, which the rules test first."""
    assert all(len(m.path) == 1 for m in rules.matches)  # so it is in the CRDs: self.<field>.matches()
    fields = sorted({m.path[0] for m in rules.matches})
    return st.fixed_dictionaries({}, optional={"type": TYPES, **dict.fromkeys(fields, VALUES)})


def run(program: Any, value: Any, variables: dict[str, Any]) -> Any:
    try:
        return program.execute({"self": value, **variables})
    except schema._CEL_ERRORS:
        return "error"


@pytest.mark.parametrize(("where", "rules"), RULE_SETS, ids=[w for w, _ in RULE_SETS])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_batch_searching_with_re2_gives_the_verdicts_of_its_rules_as_written(
    where: str, rules: Any, data: st.DataObject
) -> None:
    """The batch with its variables set by RE2 against the same rules compiled as written: the
    same results, or both raise (then every rule is evaluated again as written)."""
    value = data.draw(value_for(rules))
    written = cel.compile("[" + ", ".join(f"({r.source})" for r in rules.rules) + "]")
    variables: dict[str, Any] = {}
    for match in rules.matches:
        match.bind(value, variables)
    assert run(rules.batch, value, variables) == run(written, value, {}), (where, value)


def path_errors(path_type: str, value: str) -> list[str]:
    """What validating an HTTPRoute with one path match of ``path_type`` and ``value`` reports
    (it must be refused)."""
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"rules": [{"matches": [{"path": {"type": path_type, "value": value}}]}]},
    }
    with pytest.raises(schema.ValidationError) as caught:
        schema.validate(body)
    return caught.value.errors


def test_a_path_rule_set_still_words_its_errors() -> None:
    assert path_errors("PathPrefix", "/a b\n") == [
        'spec.rules[0].matches[0].path: Invalid value: "object": must only contain valid characters '
        "(matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"
    ]


def test_a_path_re2_cannot_encode_is_judged_by_the_rules_as_written() -> None:
    """A lone surrogate (JSON may carry one) has no UTF-8 form for RE2: a validation error, the
    CEL library's own, not an exception."""
    assert path_errors("PathPrefix", "/a\ud800")[-1].endswith(
        "evaluating rule: must only contain valid characters "
        "(matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"
    )
