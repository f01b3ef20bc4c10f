"""Pairing, comparison and the ALS receiver without Envoy (the e2e tests use a real one):
bounds, expiry and attribution, which a real Envoy can only show slowly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from itertools import permutations
from typing import Any

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from controlplane.identity import Authorizer
from controlplane.shadow.hub import Comparisons
from controlplane.shadow.pairing import HELD, UNKNOWN
from controlplane.shadow.receiver import AccessLogReceiver, als_service
from controlplane.shadow.tagging import CLUSTER_TAG, MIRRORED_SUFFIX, TAG, MirrorTag, RouteTag, sampled, threshold
from support import free_port

GW = "ns/gw"
TAG_TEXT = RouteTag("HTTPRoute ns/r", "0", (MirrorTag("m", 100, True, ("content-type",)),)).encode()


def entry(
    rid: str,
    *,
    primary: bool,
    status: int = 200,
    size: int = 10,
    ctype: str = "text/plain",
    tag: str = TAG_TEXT,
    cluster_min: str = "",
    mirror: str = "m",
) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.request.request_id = rid
    e.request.path = "/p"
    e.common_properties.upstream_cluster = "p" if primary else mirror
    if primary:
        e.common_properties.route_name = "r" + MIRRORED_SUFFIX  # as Envoy names a mirrored route
        e.common_properties.custom_tags[TAG] = tag
    elif cluster_min:
        e.common_properties.custom_tags[CLUSTER_TAG] = cluster_min
    if status:
        e.response.response_code.value = status
        e.response.response_headers["content-length"] = str(size)
        e.response.response_headers["content-type"] = ctype
    else:
        e.common_properties.response_flags.upstream_connection_failure = True
    return e


def one_pair_stream(gateway: str) -> Iterator[als_pb2.StreamAccessLogsMessage]:
    """An ALS stream as Envoy opens it (the node first) with one pair: the mirror answered 503."""
    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.node.cluster = gateway
    first.identifier.node.id = "n1"
    first.http_logs.log_entry.extend([entry("a", primary=True), entry("a", primary=False, status=503)])
    yield first


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hub(**kw: Any) -> tuple[Comparisons, Clock]:
    c = Comparisons(**kw)
    clock = Clock()
    c.pairer.clock = clock
    return c, clock


def results(c: Comparisons, mirror: str = "m") -> dict[str, int]:
    key = (GW, "HTTPRoute ns/r", "0", mirror)
    return dict(c.rules[key].results) if key in c.rules else {}


@pytest.mark.parametrize(
    ("mirror", "want"),
    [
        ({}, "same"),
        ({"status": 500}, "status_differs"),
        ({"size": 11}, "body_differs"),
        ({"ctype": "text/html"}, "headers_differ"),
        ({"status": 0}, "mirror_failed"),
    ],
)
def test_each_result_in_either_arrival_order(mirror: dict, want: str) -> None:
    for mirror_first in (False, True):
        c, _ = hub()
        legs = [entry("a", primary=True), entry("a", primary=False, **mirror)]
        for e in reversed(legs) if mirror_first else legs:
            c.add_entry(GW, e)
        assert results(c) == {want: 1}
        assert len(c.pairer) == 0


def test_a_leg_whose_other_never_comes_is_unpaired_after_the_window() -> None:
    c, clock = hub(window=10)
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("b", primary=False))
    clock.now = 9.9
    c.expire()
    assert len(c.pairer) == 2 and results(c) == {}
    clock.now = 10
    c.expire()
    assert len(c.pairer) == 0
    assert results(c) == {"unpaired": 1}
    assert dict(c.rules[(GW, UNKNOWN, UNKNOWN, "m")].results) == {"unpaired": 1}  # only a primary names its route


def test_memory_is_bounded_when_only_one_legs_entries_come() -> None:
    c, _ = hub(limit=100)
    for i in range(1000):
        c.add_entry(GW, entry(f"{i:08x}", primary=True))
    assert len(c.pairer) == 100
    assert c.entries["dropped_window_full"] == 900
    c2, _ = hub(limit=100)
    for i in range(1000):
        c2.add_entry(GW, entry(f"{i:08x}", primary=False))
    assert len(c2.pairer) == 100 and c2.entries["dropped_window_full"] == 900


def test_a_fractional_mirror_lone_primary_is_not_unpaired() -> None:
    tag = RouteTag("HTTPRoute ns/r", "0", (MirrorTag("m", 100, False, ()),)).encode()
    c, clock = hub(window=1)
    c.add_entry(GW, entry("a", primary=True, tag=tag))
    clock.now = 2
    c.expire()
    assert results(c) == {} and c.entries["not_mirrored"] == 1


def test_a_rule_sampling_less_than_its_mirror_cluster_keeps_its_own_share() -> None:
    """Mirror cluster m is logged at 100 % (another rule), this rule compares 50 %: Envoy logs its
    primary at 50 % (route threshold) and its mirror leg at 100 % (cluster threshold)."""
    tag = RouteTag("HTTPRoute ns/r", "0", (MirrorTag("m", 50, True, ()),)).encode()
    c, clock = hub(window=1)
    c.add_entry(GW, entry("00000000", primary=True, tag=tag))
    c.add_entry(GW, entry("00000000", primary=False, cluster_min=threshold(50)))
    c.add_entry(GW, entry("ffffffff", primary=False, cluster_min=threshold(50)))  # its primary was not logged
    clock.now = 2
    c.expire()
    assert results(c) == {"same": 1} and c.entries["not_sampled"] == 1 and len(c.pairer) == 0
    assert c.entries["unpaired"] == 0


def test_a_malformed_tag_is_counted_not_raised() -> None:
    c, _ = hub()
    c.add_entry(GW, entry("a", primary=True, tag="{not json"))
    assert c.entries["malformed"] == 1 and len(c.pairer) == 0


def test_a_primary_without_its_own_tag_is_paired_by_its_routes_tag_in_the_table() -> None:
    """What Envoy sends by default: the route's name, no tag. Both mirrored routes of a GRPCRoute
    rule (``r/mirrored``, and ``r/grpc/mirrored`` for gRPC calls) find the rule's tag (``r``)."""
    table = {"r": RouteTag.decode(TAG_TEXT)}
    c, _ = hub()
    c.set_tags({GW: table})
    twin = entry("b", primary=True, tag="")
    twin.common_properties.route_name = "r/grpc" + MIRRORED_SUFFIX
    for e in (entry("a", primary=True, tag=""), entry("a", primary=False), twin, entry("b", primary=False)):
        c.add_entry(GW, e)
    assert results(c) == {"same": 2} and len(c.pairer) == 0


def test_an_entry_of_a_route_the_table_does_not_know_is_counted_untagged() -> None:
    """A route no table the receiver holds knows (say, an entry later than the window after its
    route was removed): counted, nothing raised, and its mirror leg ends unpaired under
    (unknown) like any mirror leg whose primary never came."""
    c, clock = hub(window=1)
    c.set_tags({GW: {"other": RouteTag.decode(TAG_TEXT)}})
    c.add_entry(GW, entry("a", primary=True, tag=""))
    c.add_entry("ns/unknown-gateway", entry("b", primary=True, tag=""))
    assert c.entries["untagged"] == 2 and c.entries["malformed"] == 0
    c.add_entry(GW, entry("a", primary=False))
    clock.now = 2
    c.expire()
    assert dict(c.rules[(GW, UNKNOWN, UNKNOWN, "m")].results) == {"unpaired": 1}


def test_untagged_entries_with_no_table_say_once_what_collect_needs(caplog: pytest.LogCaptureFixture) -> None:
    """`mirrorplane collect` has no tag table: if the control plane was not started with
    --shadow-tags-in-routes, every primary is untagged. One warning per Gateway says why."""
    c, _ = hub()
    with caplog.at_level(logging.WARNING, logger="mirrorplane.shadow"):
        for rid in ("a", "b", "c"):
            c.add_entry(GW, entry(rid, primary=True, tag=""))
    assert c.entries["untagged"] == 3
    warnings = [r.getMessage() for r in caplog.records if "shadow.no_tags" in r.getMessage()]
    assert len(warnings) == 1 and f"gateway={GW}" in warnings[0] and "--shadow-tags-in-routes" in warnings[0]


def version(*mirrors: tuple[str, int]) -> dict[str, RouteTag]:
    """A tag table with route r mirroring to each (cluster, samplePercent)."""
    return {"r": RouteTag("HTTPRoute ns/r", "0", tuple(MirrorTag(c, p, True, ("content-type",)) for c, p in mirrors))}


def published(*tables: Mapping[str, RouteTag], window: float = 10) -> tuple[Comparisons, Clock]:
    """A receiver after the controller published each table in turn, the last one just now."""
    c, clock = hub(window=window)
    for table in tables:
        c.set_tags({GW: table})
    return c, clock


def legs(rid: str, *mirrors: str) -> list[accesslog_pb2.HTTPAccessLogEntry]:
    return [entry(rid, primary=True, tag=""), *(entry(rid, primary=False, mirror=m) for m in mirrors)]


def everything(c: Comparisons, clock: Clock) -> dict[str, dict[str, int]]:
    """Every rule's results once the window has passed (unpaired ones included), and what
    became of the entries (``paired`` counts both legs)."""
    clock.now += c.pairer.window
    c.expire()
    assert len(c.pairer) == 0
    rules = {"/".join(k[2:]): dict(s.results) for k, s in c.rules.items()}
    return {**rules, "entries": {k: n for k, n in c.entries.items() if k != "received"}}


# The tag table changes when a version is installed, before Envoy applies it, and entries come
# late (a request started under the old routes, then the logger's 0.5 s flush): entries Envoy
# logged under the old version are read after the new table came. Each must be read with the
# version that explains it, in whatever order its legs come.


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_a_request_logged_before_one_mirrors_percent_was_lowered_pairs_every_leg(order: tuple[int, ...]) -> None:
    """m goes from 100 to 50 %, m2 from 100 to 10 %: id 4000… is sampled by m under both
    versions, by m2 under the old one only. Envoy logged all three legs under the old version:
    both mirrors are compared, whichever leg comes first."""
    c, clock = published(version(("m", 100), ("m2", 100)), version(("m", 50), ("m2", 10)))
    request = legs("40000000", "m", "m2")
    for i in order:
        c.add_entry(GW, request[i])
    assert len(c.pairer) == 0, "every leg came"
    assert everything(c, clock) == {"0/m": {"same": 1}, "0/m2": {"same": 1}, "entries": {"paired": 4}}


def test_after_a_lowered_percent_requests_of_either_version_pair_and_none_is_unpaired() -> None:
    c, clock = published(version(("m", 100), ("m2", 100)), version(("m", 50), ("m2", 10)))
    for e in legs("ffffffff", "m", "m2"):  # the old version's: sampled by no mirror of the new one
        c.add_entry(GW, e)
    for e in legs("40000000", "m"):  # the new one's: m2 no longer logs it, and it is not unpaired
        c.add_entry(GW, e)
    assert everything(c, clock) == {"0/m": {"same": 2}, "0/m2": {"same": 1}, "entries": {"paired": 6}}


@pytest.mark.parametrize("mirror_first", [False, True])
def test_the_last_entries_of_a_removed_route_are_paired(mirror_first: bool) -> None:
    c, clock = published(version(("m", 100)), {"other": version(("m", 100))["r"]})
    for e in reversed(legs("a", "m")) if mirror_first else legs("a", "m"):
        c.add_entry(GW, e)
    assert everything(c, clock) == {"0/m": {"same": 1}, "entries": {"paired": 2}}


@pytest.mark.parametrize("order", list(permutations(range(4))))
def test_legs_of_the_old_and_the_new_mirror_backend_are_each_paired(order: tuple[int, ...]) -> None:
    """A rule's mirror moved from m to m2: a request Envoy served just before is mirrored to m,
    one just after to m2; neither leg is `unexpected`, neither primary `unpaired`."""
    c, clock = published(version(("m", 100)), version(("m2", 100)))
    entries = [*legs("a", "m"), *legs("b", "m2")]
    for i in order:
        c.add_entry(GW, entries[i])
    assert len(c.pairer) == 0
    assert everything(c, clock) == {"0/m": {"same": 1}, "0/m2": {"same": 1}, "entries": {"paired": 4}}


def test_a_rule_changed_twice_in_quick_succession_pairs_each_versions_entries() -> None:
    """m -> m2 -> m3 within a second, then a route removed: the entries of every version Envoy
    may still have served are read with it."""
    c, clock = published(version(("m", 100)), version(("m2", 100)), version(("m3", 100)), {})
    for rid, mirror in (("a", "m3"), ("b", "m2"), ("c", "m")):
        for e in reversed(legs(rid, mirror)):
            c.add_entry(GW, e)
    assert everything(c, clock) == {f"0/{m}": {"same": 1} for m in ("m", "m2", "m3")} | {"entries": {"paired": 6}}


def test_a_superseded_table_is_held_for_one_window_and_only_the_last_few() -> None:
    """Memory stays bounded: a table is let go once no entry can be that late (the window), and
    at most HELD of one Gateway's are held however often it changes. Publishing an unchanged
    table (the same object) is no new version."""
    first = version(("m", 100))
    c, clock = published(first, {}, window=10)
    for _ in range(2 * HELD):
        c.set_tags({GW: c.pairer.tables[GW]})
    clock.now = 9.9
    c.add_entry(GW, entry("a", primary=True, tag=""))
    assert c.entries["untagged"] == 0
    clock.now = 10
    c.add_entry(GW, entry("b", primary=True, tag=""))
    assert c.entries["untagged"] == 1

    c, _ = published(first, *({f"r{i}": first["r"]} for i in range(HELD + 1)))  # r0 … r7 held
    oldest = entry("c", primary=True, tag="")
    oldest.common_properties.route_name = "r0"
    c.add_entry(GW, oldest)
    assert c.entries["untagged"] == 0
    c.add_entry(GW, entry("d", primary=True, tag=""))
    assert c.entries["untagged"] == 1, "the first table was let go: HELD newer ones are held"


def test_an_entrys_own_tag_comes_before_the_table() -> None:
    """Routes carry their tag with XdsOptions.shadow_tags_in_routes (for `mirrorplane collect`):
    then the entry says it itself, whatever a table says."""
    c, _ = hub()
    c.set_tags({GW: {"r": RouteTag("HTTPRoute ns/other", "9", (MirrorTag("m", 100, True, ()),))}})
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("a", primary=False, ctype="text/html"))
    assert results(c) == {"headers_differ": 1}


def test_threshold_matches_the_share_of_uuids() -> None:
    assert threshold(100) == "~" and threshold(0) == "0000" and threshold(25) == "4000"
    assert sampled("3fffffff-0000", 25) and not sampled("4000", 25) and not sampled("40000000-0000", 25)
    assert not sampled("00000000", 0)


@asynccontextmanager
async def channel_to(service: tuple[str, Callable[[grpc.aio.Server], object]]) -> AsyncIterator[grpc.aio.Channel]:
    """A plaintext gRPC server on a free port with one service, and a channel to it."""
    server = grpc.aio.server()
    service[1](server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        await server.stop(0)


async def test_receiver_attributes_a_stream_to_its_node_gateway_and_refuses_a_bad_one() -> None:
    c = Comparisons()
    async with channel_to(als_service(AccessLogReceiver(c, Authorizer(enforced=False)))) as ch:
        stub = als_pb2_grpc.AccessLogServiceStub(ch)

        await stub.StreamAccessLogs(one_pair_stream(GW))
        assert results(c) == {"status_differs": 1}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StreamAccessLogs(one_pair_stream("no-namespace"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_dashboard_queries_metrics_the_receiver_exports() -> None:
    import json
    import re
    from pathlib import Path

    dash = json.loads(
        (Path(__file__).resolve().parent.parent / "manifests" / "dashboards" / "shadow-testing.json").read_text()
    )
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"mirrorplane_\w+", e)}
    c, _ = hub()
    c.add_entry(GW, entry("a", primary=True))
    c.add_entry(GW, entry("a", primary=False, status=500))
    exported = set(re.findall(r"^(mirrorplane_\w+)[{ ]", c.render().decode(), re.M))
    assert used and used <= exported, used - exported
    assert {"mirrorplane_mirror_comparisons_total", "mirrorplane_mirror_latency_seconds_bucket"} <= used


def test_no_shadow_leaves_the_access_log_out(tmp_path) -> None:
    """`serve --no-shadow`: no logger, no thresholds; by default both (and the seed route's tag)."""
    import json
    from pathlib import Path

    from controlplane.cli import build_parser
    from controlplane.offline import translate_folder
    from controlplane.xds.translator import XdsOptions

    local = Path(__file__).resolve().parent.parent / "manifests" / "local"
    on = json.dumps(translate_folder(local, xds_options=XdsOptions()))
    off = json.dumps(translate_folder(local, xds_options=XdsOptions(shadow=False)))
    assert "upstream_log" in on and '"below": "~"' in on
    assert "upstream_log" not in off and "mirrorplane_als" not in off
    assert build_parser().parse_args(["serve", str(tmp_path), "--no-shadow"]).no_shadow
