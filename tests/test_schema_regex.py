"""A rule set's ``matches()`` runs on Python's ``re`` only where it gives RE2's verdict
(``schema.python_regex``, docs/performance.md): compared here with the CEL library's own
``matches()`` on generated strings, for every pattern of the CRDs it takes and for generated
patterns of the subset it accepts. Any disagreement fails."""

from __future__ import annotations

import importlib.resources
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.cellib import cel

PATH_PATTERN = r"""^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"""


def crd_patterns() -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for rule in value.get("x-kubernetes-validations", []):
                found.update(m.group(3) for m in schema._MATCHES.finditer(rule["rule"]))
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for path in (importlib.resources.files(schema.__package__) / "crds").iterdir():
        if path.name.endswith(".yaml"):
            walk(yaml.safe_load(path.read_text()))
    return found


TAKEN = sorted(p for p in crd_patterns() if schema.python_regex(p) is not None)
# Strings near what the patterns test: their own characters, the ones around them, line breaks
# (``$`` and a final newline), non-ASCII letters (case folding, Unicode classes), percent escapes.
ALPHABET = st.sampled_from(list("azAZ09_-./%#?&'()*+,;=:@~!$ \n\r\téßKſ[]{}^\\|\"`") + ["\u212a", "\x00", "%2f", "%G1"])
STRINGS = st.lists(ALPHABET, max_size=24).map("".join)


def cel_matches(pattern: str, value: str) -> bool:
    program = cel.compile(f'self.matches(r"""{pattern}""")')
    result = program.execute({"self": value})
    assert isinstance(result, bool)
    return result


def python_matches(pattern: str, value: str) -> bool:
    regex = schema.python_regex(pattern)
    assert regex is not None
    return regex.search(value) is not None


def test_the_path_pattern_is_taken_and_the_ones_re_could_differ_on_are_not() -> None:
    assert PATH_PATTERN in TAKEN
    for pattern in (
        r"^(?i)\.?[a-z_][a-z_0-9]*$",  # a flag: case folding differs
        r"^a.b$",  # any character
        r"^\d+$",  # Unicode digits in one, ASCII in the other
        r"^[a-z&&[^x]]$",  # RE2's class operations
        r"^(a+)+$",  # backtracking without bound in re
        r"^a*+$",  # possessive in re
        r"^[^/]+$",  # a negated class
    ):
        assert schema.python_regex(pattern) is None, pattern


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=st.sampled_from(TAKEN), value=STRINGS)
def test_every_crd_pattern_taken_gives_the_cel_librarys_verdict(pattern: str, value: str) -> None:
    assert python_matches(pattern, value) == cel_matches(pattern, value)


def atoms() -> st.SearchStrategy[str]:
    literal = st.sampled_from(list("az09_-/%#&',:;=@~ ") + [r"\.", r"\*", r"\(", r"\$", r"\-", r"\/", r"\^"])
    klass = st.lists(st.sampled_from(["a-z", "A-Z", "0-9", "-", ".", "/", "%", "_", "~", "*", "$", "^"]), min_size=1)
    return st.one_of(literal, klass.map(lambda parts: "[" + "".join(parts) + "]"))


def quantified(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifier = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?"])
    return st.tuples(inner, quantifier).map("".join)


PATTERNS = st.recursive(
    quantified(atoms()),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join),
        quantified(st.tuples(st.sampled_from(["(", "(?:"]), inner).map(lambda t: f"{t[0]}{t[1]})")),
    ),
    max_leaves=6,
).flatmap(lambda body: st.sampled_from([body, f"^{body}", f"{body}$", f"^{body}$"]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pattern=PATTERNS, values=st.lists(STRINGS, min_size=1, max_size=6))
def test_any_pattern_taken_gives_the_cel_librarys_verdict(pattern: str, values: list[str]) -> None:
    if schema.python_regex(pattern) is None:
        return
    for value in values:
        assert python_matches(pattern, value) == cel_matches(pattern, value), (pattern, value)


def test_a_path_rule_set_calls_python_and_still_words_its_errors() -> None:
    rules = path_rules()
    assert rules is not None and rules.matches, "the path's pattern runs on re"
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/a b\n"}}]}]},
    }
    try:
        schema.validate(body)
    except schema.ValidationError as exc:
        assert exc.errors == [
            'spec.rules[0].matches[0].path: Invalid value: "object": must only contain valid characters '
            "(matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"
        ]
    else:
        raise AssertionError("a path with a space and a newline was accepted")


def path_rules() -> Any:
    node: Any = schema._compiled("gateway.networking.k8s.io/v1", "HTTPRoute").root
    for step in ("spec", "rules", None, "matches", None, "path"):
        node = node.items if step is None else node.properties[step]
    return node.rules


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["Exact", "PathPrefix", "RegularExpression", "Other"]),
            "value": st.one_of(STRINGS, STRINGS.map(lambda s: "/" + s), st.integers(), st.none()),
        },
    )
)
def test_the_path_rule_set_gives_the_verdicts_of_its_rules_as_written(path: dict[str, Any]) -> None:
    """The batch with its variables set by ``re`` against the same rules compiled as written:
    the same results, or both raise (then every rule is evaluated again as written)."""
    rules = path_rules()
    written = cel.compile("[" + ", ".join(f"({r.source})" for r in rules.rules) + "]")

    def run(program: Any, variables: dict[str, Any]) -> Any:
        try:
            return program.execute({"self": path, **variables})
        except schema._CEL_ERRORS:
            return "error"

    variables: dict[str, Any] = {}
    for match in rules.matches:
        match.bind(path, variables)
    assert run(rules.batch, variables) == run(written, {})
