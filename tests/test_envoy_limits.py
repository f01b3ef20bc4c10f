"""The translator's idea of what Envoy refuses is Envoy's: generated regexes and header modifiers
are put to a real Envoy (``envoy --mode validate``) and its verdict must equal ours, both ways:
refusing what Envoy accepts would drop good rules, accepting what it refuses would NACK a Gateway.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane import ir
from controlplane.gatewayapi.envoy_limits import MAX_PROGRAM_SIZE, header_mods_problems, regex_problem
from controlplane.xds.translator import build_resources
from envoy_validate import envoy_rejects

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
    kw = {"response_headers" if response else "request_headers": mods}
    route = ir.Route("r", ir.Match(), direct_status=200, **kw)  # type: ignore[arg-type]
    envoy = envoy_rejects(build_resources(_one_route(route)))
    ours = header_mods_problems(mods, "filter")
    assert (not ours) == (envoy is None), f"{mods}: ours={ours!r} envoy={envoy!r}"
