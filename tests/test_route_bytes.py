"""The controller's virtual hosts are written as bytes from fragments (xds/translator.py,
RouteEncoder), not built as messages: those bytes must be exactly what protobuf serializes from
the messages built whole (``serialize_virtual_host``), or Envoy would receive something else
than the goldens say. Checked on every IR of the goldens and on generated virtual hosts that
reach every field the encoder writes, at several body limits (the bound's header matches and
buffer limits depend on it)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane import ir
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.xds import wire
from controlplane.xds.translator import DEFAULT_MIRROR_BODY_LIMIT, RouteEncoder, serialize_virtual_host
from goldens import GOLDEN, cases, from_json, xds_case_ir, xds_cases

LIMITS = (DEFAULT_MIRROR_BODY_LIMIT, 0, 100, 1 << 30)


def _virtual_hosts(gateway: ir.GatewayIR) -> list[ir.VirtualHost]:
    return [vh for lst in gateway.listeners for chain in lst.chains for vh in chain.virtual_hosts]


def _golden_irs() -> dict[str, ir.GatewayIR]:
    out = {f"golden-xds/{c}": xds_case_ir(c) for c in xds_cases()}
    for case in cases():
        for key, body in json.loads((GOLDEN / case / "ir.json").read_text()).items():
            out[f"golden/{case}/{key}"] = from_json(ir.GatewayIR, body)
    return out


def _assert_same(encoder: RouteEncoder, vh: ir.VirtualHost) -> None:
    serialized = serialize_virtual_host(vh, encoder.limit, encoder.json_tags)
    assert encoder.virtual_host(vh) == serialized, vh.name
    # As a RouteConfiguration's element (EncodedMemo's), head and fields joined at once (by an
    # encoder of its own: the caller counts what this one built).
    framed = RouteEncoder(encoder.limit, encoder.json_tags).framed_virtual_host(vh)
    assert framed == wire.delimited(2, serialized), vh.name


@pytest.mark.parametrize("json_tags", [False, True])
@pytest.mark.parametrize("limit", LIMITS)
def test_every_golden_virtual_host_is_written_as_protobuf_serializes_it(limit: int, json_tags: bool) -> None:
    encoder = RouteEncoder(limit, json_tags)
    seen: list[ir.Route] = []
    for gateway in _golden_irs().values():
        for vh in _virtual_hosts(gateway):
            _assert_same(encoder, vh)
            seen += vh.routes
    # The goldens reach the encoder's fast path (not only the routes it builds as messages).
    assert len([r for r in seen if r.mirrors]) > 10
    assert encoder.built < len(seen) / 2


def test_the_benchmark_workload_takes_the_fast_path_only() -> None:
    """Every route of issue 12's workload is written from fragments: none is built as a
    message. (A shadow tag moved out of route metadata would make every mirrored route take the
    slow path, still correct; this says so.)"""
    from benchmarks.change_latency import http_routes
    from benchmarks.workload import NAMESPACE, objects

    docs = objects(0) + http_routes(64) + objects(40)[len(objects(0)) :]
    store = Store.from_objects(from_dict(schema.validate(o)) for o in docs)
    encoder = RouteEncoder(DEFAULT_MIRROR_BODY_LIMIT)
    for vh in _virtual_hosts(translate(store).gateways[f"{NAMESPACE}/gw"]):
        _assert_same(encoder, vh)
    assert encoder.built == 0


# --- generated virtual hosts -------------------------------------------------------------------

# Short, long (a length of two varint bytes), empty, non-ASCII, and '%' (escaped in header values).
text = st.one_of(st.sampled_from(["", "a", "/", "x-h", "100%", "ü/ñ", "k" * 130, "/v2/", "//"]), st.text(max_size=20))
paths = st.one_of(st.sampled_from(["/", "", "//", "/a", "/a/", "/p" * 70, "^/re.*$"]), text)
string_matches = st.builds(ir.StringMatch, name=text, value=text, regex=st.booleans())
header_mods = st.builds(
    ir.HeaderMods,
    set=st.lists(st.tuples(text, text), max_size=2).map(tuple),
    add=st.lists(st.tuples(text, text), max_size=2).map(tuple),
    remove=st.lists(text, max_size=2).map(tuple),
)
few_mods = st.one_of(st.just(ir.NO_HEADER_MODS), header_mods)
comparisons = st.one_of(
    st.just(ir.DEFAULT_COMPARISON),
    st.builds(
        ir.Comparison,
        sample_percent=st.integers(0, 100),
        body=st.booleans(),
        body_limit_bytes=st.sampled_from([0, 1024, 65536]),
        headers=st.lists(st.sampled_from(["content-type", "x-a", "etag"]), max_size=2, unique=True).map(tuple),
        ignore_json_paths=st.lists(st.sampled_from(["$.a", "$.t"]), max_size=2).map(tuple),
    ),
)


@st.composite
def mirrors(draw: st.DrawFn) -> ir.Mirror:
    denominator = draw(st.sampled_from([100, 3, 1_000_000, 7]))
    return ir.Mirror(
        backend=draw(st.sampled_from(["mirror-a", "mirror-b", "m" * 140])),
        numerator=draw(st.integers(0, denominator)),
        denominator=denominator,
        shadow_host_suffix=draw(st.booleans()),
        request_headers=draw(few_mods),
        hostname=draw(st.one_of(st.none(), text)),
        trace_sampled=draw(st.one_of(st.none(), st.booleans())),
        comparison=draw(comparisons),
        policy=draw(st.one_of(st.none(), st.just("ns/policy"))),
    )


@st.composite
def routes(draw: st.DrawFn, index: int) -> ir.Route:
    kind = draw(st.sampled_from(["HTTPRoute", "HTTPRoute", "GRPCRoute"]))
    backends = draw(
        st.lists(
            st.builds(
                ir.WeightedBackend,
                backend=st.one_of(st.none(), st.sampled_from(["svc-a", "svc-b"])),
                weight=st.integers(0, 1000),
                request_headers=st.one_of(st.just(ir.NO_HEADER_MODS), header_mods),
                response_headers=st.just(ir.NO_HEADER_MODS),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple)
    )
    action: dict[str, Any] = {}
    shape = draw(st.sampled_from(["route"] * 6 + ["direct", "redirect"]))
    if shape == "direct":
        action["direct_status"] = draw(st.sampled_from([500, 404]))
    elif shape == "redirect":
        action["redirect"] = ir.Redirect(scheme="https", port=draw(st.one_of(st.none(), st.just(8443))))
    name = draw(st.sampled_from([f"httproute/ns/r/rule/{index}/match/0", "", "n" * 130 + str(index)]))
    return ir.Route(
        name=name,
        match=ir.Match(
            path_type=draw(st.sampled_from(["Exact", "PathPrefix", "RegularExpression"])),
            path=draw(paths),
            headers=draw(st.lists(string_matches, max_size=2).map(tuple)),
            query_params=draw(st.lists(string_matches, max_size=2).map(tuple)),
            method=draw(st.one_of(st.none(), st.sampled_from(["GET", "POST"]))),
        ),
        backends=backends,
        mirrors=draw(st.lists(mirrors(), max_size=2).map(tuple)),
        request_headers=draw(few_mods),
        response_headers=draw(few_mods),
        rewrite=draw(
            st.one_of(st.none(), st.builds(ir.Rewrite, hostname=st.one_of(st.none(), text), full_path=st.none()))
        ),
        cors=draw(
            st.one_of(st.none(), st.builds(ir.Cors, allow_origins=st.just(("https://*.a.com",)), max_age=st.just(5)))
        ),
        timeout_ms=draw(st.one_of(st.none(), st.integers(0, 5000))),
        backend_timeout_ms=draw(st.one_of(st.none(), st.integers(0, 5000))),
        stat_prefix=draw(st.sampled_from(["", name, "s" * 130])),
        kind=kind,  # type: ignore[arg-type]
        source=draw(st.sampled_from(["", f"{kind} ns/r"])),
        rule=draw(st.sampled_from(["", "0", "named"])),
        **action,
    )


@st.composite
def virtual_hosts(draw: st.DrawFn) -> ir.VirtualHost:
    n = draw(st.integers(0, 4))
    return ir.VirtualHost(
        name=draw(st.sampled_from(["8000/a.example.com", "", "h" * 200])),
        domains=tuple(draw(st.lists(text, max_size=3))),
        routes=tuple(draw(routes(i)) for i in range(n)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(vh=virtual_hosts(), limit=st.one_of(st.sampled_from(LIMITS), st.integers(0, 1 << 30)))
def test_generated_virtual_hosts_are_written_as_protobuf_serializes_them(vh: ir.VirtualHost, limit: int) -> None:
    encoder = RouteEncoder(limit)
    _assert_same(encoder, vh)
    _assert_same(encoder, vh)  # again, from the fragments the first call kept


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    drawn=st.lists(st.integers(0, 9).flatmap(routes), min_size=2, max_size=6),
    limit=st.sampled_from(LIMITS),
)
def test_routes_sharing_an_action_share_only_what_they_read(drawn: list[ir.Route], limit: int) -> None:
    """The encoder keeps a route's fields 2 to 13 (its action, a mirrored route's shadow tag and
    the header changes) by what they read (RouteEncoder._middle). Routes equal in backends,
    rewrite and timeouts and different in everything else (names, sources, rules, kinds,
    matches, header changes, CORS; each also with the first route's mirrors), through one encoder: each must still be written as its own message serializes. A key that
    left out an input the action or the tag reads would hand one route another's bytes."""
    first = drawn[0]
    encoder = RouteEncoder(limit)
    for i, r in enumerate(drawn):
        for mirrors in (first.mirrors, r.mirrors):
            alike = replace(
                r,
                backends=first.backends,
                rewrite=first.rewrite,
                timeout_ms=first.timeout_ms,
                backend_timeout_ms=first.backend_timeout_ms,
                mirrors=mirrors,
            )
            vh = ir.VirtualHost(f"vh{i}", ("a.example.com",), (alike,))
            _assert_same(encoder, vh)


# What RouteEncoder._middle reads of a route, and so keys it by (by identity first, then by value).
_MIDDLE_FIELDS = (
    "backends",
    "mirrors",
    "rewrite",
    "timeout_ms",
    "backend_timeout_ms",
    "request_headers",
    "response_headers",
    "cors",
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    drawn=st.lists(st.integers(0, 9).flatmap(routes), min_size=2, max_size=6),
    limit=st.sampled_from(LIMITS),
)
def test_routes_holding_the_same_objects_but_one_are_written_apart(drawn: list[ir.Route], limit: int) -> None:
    """The routes of one rule hold the very same objects, and _middle looks them up by identity
    before it hashes them: routes that share every object it reads but one, through one encoder,
    must each be written as its own message serializes. A key that left out one of them would
    hand the second route the first one's action or header changes."""
    first = drawn[0]
    encoder = RouteEncoder(limit)
    for i, r in enumerate(drawn):
        for name in _MIDDLE_FIELDS:
            one_apart = replace(first, **{name: getattr(r, name)})
            _assert_same(encoder, ir.VirtualHost(f"vh{i}-{name}", ("a.example.com",), (one_apart,)))


def test_a_delimited_field_has_its_tag_and_length_as_varints_at_every_size() -> None:
    """wire.delimited's tables and two-byte lengths against the varints written out."""
    from controlplane.xds import wire

    for number in (1, 2, 3, 14, 15, 16, 31, 32, 63, 64, 1000):
        for n in (0, 1, 127, 128, 129, 255, 256, 16383, 16384, 16385, 70000):
            data = b"x" * n
            assert wire.delimited(number, data) == wire.varint(number << 3 | 2) + wire.varint(n) + data, (number, n)
