"""The translator's idea of what Envoy refuses is Envoy's: generated regexes and header modifiers
are put to a real Envoy (``envoy --mode validate``) and its verdict must equal ours, both ways:
refusing what Envoy accepts would drop good rules, accepting what it refuses would NACK a Gateway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane import ir
from controlplane.gatewayapi.envoy_limits import MAX_PROGRAM_SIZE, header_mods_problems, regex_problem
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.providers.files import parse_text
from controlplane.xds.translator import build_resources
from envoy_validate import envoy_rejects
from test_fuzz import BASE

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that cover RE2's refusals (backreferences, look-around, possessive and atomic groups,
# repetition caps, bad classes and escapes) and its program size, and plenty that are fine.
_REGEX_PIECES = st.sampled_from(
    [
        "a", "/", ".", ".*", "[a-z]", "[z-a]", "\\d", "\\1", "\\k<x>", "(", ")", "(?:", "(?=", "(?!", "(?<=",
        "(?<!", "(?>", "(?P<x>", "(?<x>", "(?i)", "+", "*", "?", "*+", "{2}", "{1000}", "{1001}", "{2,50}",
        "|", "^", "$", "\\p{Greek}", "\\pL", "\\Q", "\\E", "\\C", "é", "[a-é]", "\\x{100}", "(?i)k", "[^a]",
        "[[:alpha:]]", "\\b", "x{30}", "{20}",
    ]
)
_REGEXES = st.lists(_REGEX_PIECES, min_size=1, max_size=8).map("".join)


def _one_route(route: ir.Route) -> ir.GatewayIR:
    vh = ir.VirtualHost("vh", ("*",), (route,))
    return ir.GatewayIR("ns/gw", (ir.HTTPListener("http-80", 80, (ir.FilterChain("http-80", (vh,)),)),), ())


@_SETTINGS
@given(_REGEXES)
def test_a_path_regex_is_refused_exactly_when_envoy_refuses_it(regex: str) -> None:
    route = ir.Route("r", ir.Match("RegularExpression", regex), direct_status=200)
    envoy = envoy_rejects(build_resources(_one_route(route)))
    ours = regex_problem(regex)
    assert (ours is None) == (envoy is None), f"regex {regex!r}: ours={ours!r} envoy={envoy!r}"


def test_the_program_size_limit_is_envoys() -> None:
    """/a{n}: the program has n + 5 instructions; Envoy allows up to 100."""
    for n, accepted in ((MAX_PROGRAM_SIZE - 5, True), (MAX_PROGRAM_SIZE - 4, False)):
        route = ir.Route("r", ir.Match("RegularExpression", f"/a{{{n}}}"), direct_status=200)
        assert (envoy_rejects(build_resources(_one_route(route))) is None) is accepted
        assert (regex_problem(f"/a{{{n}}}") is None) is accepted


_NAMES = st.sampled_from(["x-a", "Host", "host", ":path", ":status", "x\nb", "x\0", "a b", "é", "", "X-Mixed"])
_VALUES = st.lists(st.sampled_from(["v", " ", "\r", "\n", "\0", "\t", "é", "%", "%REQ(x)%", "\x7f", "\x01"]), max_size=4).map("".join)


@_SETTINGS
@given(
    st.lists(st.tuples(_NAMES, _VALUES), max_size=2),
    st.lists(st.tuples(_NAMES, _VALUES), max_size=2),
    st.lists(_NAMES, max_size=2),
    st.booleans(),
)
def test_a_header_modifier_is_refused_exactly_when_envoy_refuses_it(
    set_: list[tuple[str, str]], add: list[tuple[str, str]], remove: list[str], response: bool
) -> None:
    mods = ir.HeaderMods(tuple(set_), tuple(add), tuple(remove))
    route = ir.Route("r", ir.Match(), direct_status=200)
    route = replace(route, response_headers=mods) if response else replace(route, request_headers=mods)
    envoy = envoy_rejects(build_resources(_one_route(route)))
    ours = header_mods_problems(mods, "filter")
    assert (not ours) == (envoy is None), f"{mods}: ours={ours!r} envoy={envoy!r}"


@st.composite
def _hostile_route(draw: st.DrawFn) -> dict[str, Any]:
    """An HTTPRoute whose every Envoy-bound string comes from the pools above."""
    mods = {
        "set": [{"name": n, "value": v} for n, v in draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=2, unique_by=lambda t: t[0].lower()))],
        "remove": draw(st.lists(_NAMES, max_size=2, unique=True)),
    }
    match: dict[str, Any] = {"path": {"type": "RegularExpression", "value": draw(_REGEXES)}}
    if draw(st.booleans()):
        match["headers"] = [{"name": "x-h", "type": "RegularExpression", "value": draw(_REGEXES)}]
    if draw(st.booleans()):
        match["queryParams"] = [{"name": "q", "type": "RegularExpression", "value": draw(_REGEXES)}]
    kind = draw(st.sampled_from(["RequestHeaderModifier", "ResponseHeaderModifier"]))
    rule = {
        "matches": [match],
        "filters": [{"type": kind, kind[0].lower() + kind[1:]: mods}],
        "backendRefs": [{"name": "pipy", "port": 8080}],
    }
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "hostile", "namespace": "server"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [rule, {"backendRefs": [{"name": "pipy", "port": 8080}]}]},
    }


@_SETTINGS
@given(_hostile_route())
def test_whatever_passes_the_schema_envoy_accepts_from_the_translator(route: dict[str, Any]) -> None:
    """End to end: loaded through the schema, translated, and put to Envoy."""
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "server"},
        "spec": {"gatewayClassName": "mp", "listeners": [{"name": "http", "port": 8000, "protocol": "HTTP"}]},
    }
    objects, _ = parse_text(yaml.safe_dump_all([*BASE, gateway, route]), "hostile.yaml")
    result = translate(Store.from_objects(objects.values()))
    for key, gateway_ir in result.gateways.items():
        error = envoy_rejects(build_resources(gateway_ir))
        assert error is None, f"{key}: {error}"
