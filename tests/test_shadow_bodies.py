"""Body comparison without Envoy (tests/test_e2e_shadow.py uses a real one): digests under
ignoreJSONPaths and the limit, hostile bodies, and the bounded join of digests with pairs."""

from __future__ import annotations

import json

import grpc
import pytest

from controlplane.identity import Authorizer
from controlplane.shadow.bodies import OVER_LIMIT, BodyStore, Digest, digest_body, parse_path
from controlplane.shadow.bodyreport import BodyReceiver, bodies_service
from controlplane.shadow.tagging import MirrorTag, RouteTag, body_settings
from controlplane.shadow.v1 import shadow_pb2, shadow_pb2_grpc
from test_shadow import GW, channel_to, hub, results
from test_shadow import entry as log_entry

SETTING = body_settings(64, ())
JSON_SETTING = body_settings(1 << 20, ("$.timestamp", "$.items[*].id", "$.list[0]", "$.gone.*"))
BODY_TAG = RouteTag("HTTPRoute ns/r", "0", (MirrorTag("m", 100, True, ("content-type",), SETTING),)).encode()


def entry(rid: str, *, primary: bool) -> object:
    return log_entry(rid, primary=primary, tag=BODY_TAG)


def test_json_differing_only_in_ignored_paths_has_one_digest() -> None:
    a = b'{"a": 1, "timestamp": "12:00", "items": [{"id": 1, "n": "x"}], "list": [7, 8], "gone": {"k": 1}}'
    b = b'{"timestamp":"12:00:01.5","a":1,"items":[{"n":"x","id":2}],"list":[9,8],"gone":{"k":2,"j":3}}'
    assert digest_body(a, False, JSON_SETTING).digest == digest_body(b, False, JSON_SETTING).digest
    c = b'{"a": 2, "timestamp": "12:00", "items": [{"id": 1, "n": "x"}], "list": [7, 8]}'
    assert digest_body(a, False, JSON_SETTING).digest != digest_body(c, False, JSON_SETTING).digest
    # The excerpt is the body as compared.
    assert digest_body(b, False, JSON_SETTING).excerpt == '{"a":1,"gone":{},"items":[{"n":"x"}],"list":[null,8]}'


def test_without_ignored_paths_the_bytes_are_compared() -> None:
    d = digest_body(b'{"a": 1}', False, SETTING)
    assert d.size == 8 and d.excerpt == '{"a": 1}' and d != digest_body(b'{"a":1}', False, SETTING)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[" * 200_000 + b"]" * 200_000, b'{"timestamp": ' + b"1" * 10_000 + b"}", b"\xff\xfe", b""],
)
def test_hostile_or_odd_bodies_digest_as_bytes_or_json_without_raising(body: bytes) -> None:
    d = digest_body(body, False, JSON_SETTING)
    assert len(d.digest) == 64 and len(d.excerpt) <= 256


def test_a_body_over_the_limit_is_compared_by_size() -> None:
    assert digest_body(b"x" * 65, False, SETTING) is OVER_LIMIT
    assert digest_body(b"", True, SETTING) is OVER_LIMIT
    assert digest_body(b"x" * 64, False, SETTING).digest


@pytest.mark.parametrize("path", ["timestamp", "$", "$.a..b", "$[x]", "$.a[*"])
def test_a_path_the_crd_would_refuse_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


def digests(text: bytes) -> dict[str, Digest]:
    return {SETTING: digest_body(text, False, SETTING)}


@pytest.mark.parametrize("bodies_first", [True, False])
def test_a_pair_is_compared_by_digest_whichever_comes_first(bodies_first: bool) -> None:
    c, _ = hub()
    if bodies_first:
        c.add_bodies(GW, "a", "p", digests(b"hello"))
        c.add_bodies(GW, "a", "m", digests(b"olleh"))
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("a", primary=False))
    if not bodies_first:
        assert results(c) == {}  # waits for its bodies
        c.add_bodies(GW, "a", "p", digests(b"hello"))
        assert results(c) == {}
        c.add_bodies(GW, "a", "m", digests(b"olleh"))
    assert results(c) == {"body_differs": 1}
    d = c.rules[(GW, "HTTPRoute ns/r", "0", "m")].recent[-1]
    assert d.detail.startswith("digest ") and d.primary is not None and d.primary.excerpt == "hello"


def test_a_pair_whose_bodies_never_come_is_compared_by_size_after_the_wait() -> None:
    c, clock = hub(body_wait=5)
    c.bodies.clock = clock
    c.add_bodies(GW, "a", "p", digests(b"hello"))
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("a", primary=False))
    clock.now = 4
    c.expire()
    assert results(c) == {}
    clock.now = 6
    c.expire()
    assert results(c) == {"same": 1} and c.entries["body_missing"] == 1


def test_waiting_pairs_and_stored_bodies_are_bounded() -> None:
    c, clock = hub(limit=10)
    c.bodies.clock = clock
    for i in range(100):  # pairs whose bodies never come
        c.add_entry(GW, entry(f"{i:08x}", primary=True))
        c.add_entry(GW, entry(f"{i:08x}", primary=False))
    assert c._awaiting_pairs == 10 and results(c) == {"same": 90} and c.entries["body_missing"] == 180
    for i in range(100):  # bodies nobody asks for
        c.add_bodies(GW, f"x{i}", "m", digests(b"x"))
    assert len(c.bodies) == 10 and c.entries["body_unused"] == 90


def test_the_store_forgets_after_its_ttl_and_counts_unused() -> None:
    counted: dict[str, int] = {}
    clock = [0.0]
    store = BodyStore(lambda k, n: counted.__setitem__(k, counted.get(k, 0) + n), ttl=1, clock=lambda: clock[0])
    store.add((GW, "a", "p"), digests(b"x"))
    store.add((GW, "b", "p"), digests(b"x"))
    assert store.get((GW, "a", "p"), SETTING) is not None
    clock[0] = 2
    store.expire()
    assert len(store) == 0 and counted == {"body_unused": 1}


async def test_the_report_service_digests_and_refuses_what_it_cannot_read() -> None:
    c, _ = hub()
    async with channel_to(bodies_service(BodyReceiver(c.add_bodies, c.count, Authorizer(enforced=False)))) as ch:
        stub = shadow_pb2_grpc.BodiesStub(ch)
        report = shadow_pb2.BodyReport(gateway=GW, request_id="a", cluster="p", body=b"hi", settings=f"[{SETTING}]")
        await stub.Report(report)
        assert c.bodies.get((GW, "a", "p"), SETTING) == digest_body(b"hi", False, SETTING)
        for bad, code in (
            (
                shadow_pb2.BodyReport(gateway="no-namespace", request_id="a", cluster="p", settings="[]"),
                "PERMISSION_DENIED",
            ),
            (shadow_pb2.BodyReport(gateway=GW, request_id="a", cluster="p", settings="{"), "INVALID_ARGUMENT"),
            (shadow_pb2.BodyReport(gateway=GW, request_id="a", cluster="p", settings='[[1,"x"]]'), "INVALID_ARGUMENT"),
            (shadow_pb2.BodyReport(gateway=GW, cluster="p", settings=f"[{SETTING}]"), "INVALID_ARGUMENT"),
            # More settings than rules could ask for: one body must not cost unbounded digests.
            (
                shadow_pb2.BodyReport(gateway=GW, request_id="a", cluster="p", settings=json.dumps([[1, []]] * 65)),
                "INVALID_ARGUMENT",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Report(bad)
            assert err.value.code().name == code
    assert c.entries["body_received"] == 5 and c.entries["body_malformed"] == 4 and c.entries["body_denied"] == 1


def test_the_web_page_shows_both_digests_and_body_excerpts_escaped() -> None:
    from controlplane.web.pages import pair

    c, _ = hub()
    c.add_bodies(GW, "a", "p", digests(b"<b>hello</b>"))
    c.add_bodies(GW, "a", "m", digests(b"<b>olleh</b>"))
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("a", primary=False))
    d = c.rules[(GW, "HTTPRoute ns/r", "0", "m")].recent[-1]
    assert d.primary is not None and d.mirror_leg is not None
    html = pair(d)
    assert d.primary.digest in html and d.mirror_leg.digest in html
    assert "<pre>&lt;b&gt;hello&lt;/b&gt;</pre>" in html and "<pre>&lt;b&gt;olleh&lt;/b&gt;</pre>" in html
