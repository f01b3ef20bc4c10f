"""What Envoy's apply time of the 10,000-route RouteConfiguration is made of.

    python -m benchmarks.route_shape [--routes 10000] [--rounds 3] [--concurrency 1 2]

The change_latency workload (N rules with a path match, a primary and a 50 % mirror, 16 rules
per HTTPRoute, one hostname each) is translated once. Then variants of its RouteConfiguration,
each with one route's path changed, are installed in the cache of a live control plane and timed
the way change_latency times its floor: from the install until an HTTP request through Envoy for
the new path stops answering 404. Every variant is pushed twice in a row, and only the second
push is kept, so that no variant pays for the stats or clusters the previous one left behind.
Variants and Envoy concurrencies are interleaved round by round (the machine is shared). Beside
the wall-clock time, the CPU time Envoy's threads used meanwhile (Linux schedstat), which other
processes on the same cores barely move.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2
from envoy.type.v3 import range_pb2

from controlplane.echo import build_app
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.shadow.tagging import METADATA_KEY, MIRRORED_SUFFIX, RouteTag, threshold
from controlplane.xds.cache import Snapshot
from controlplane.xds.resources import Resources
from controlplane.xds.translator import BODY_HEADER, DEFAULT_MIRROR_BODY_LIMIT, XdsOptions

from .change_latency import GATEWAY, RULES, http_routes
from .procstat import cpu_seconds
from .served import until_served
from .workload import objects, route

Transform = Callable[[route_pb2.RouteConfiguration], None]


def _each_route(config: route_pb2.RouteConfiguration, edit: Callable[[Any], None]) -> None:
    for vh in config.virtual_hosts:
        for r in vh.routes:
            edit(r)


def _per_route_stat_prefix(config: route_pb2.RouteConfiguration) -> None:
    """The shape before issue 12: each unmirrored twin counted by its own stat_prefix."""
    for vh in config.virtual_hosts:
        for r in vh.routes:
            if r.name.endswith("/not-mirrored"):
                r.stat_prefix = r.name


def _shared_stat_prefix(config: route_pb2.RouteConfiguration) -> None:
    """Every unmirrored twin counted into one stat_prefix (one stat per virtual host)."""
    for vh in config.virtual_hosts:
        for r in vh.routes:
            if r.name.endswith("/not-mirrored"):
                r.stat_prefix = "not-mirrored"


def _no_metadata(config: route_pb2.RouteConfiguration) -> None:
    _each_route(config, lambda r: r.ClearField("metadata"))


def _thresholds(config: route_pb2.RouteConfiguration) -> None:
    """The shape before the eighth round: every mirrored route carries its sampling threshold,
    the workload's 100 % too (now only a lower one is carried, the name says the rest)."""

    def edit(r: route_pb2.Route) -> None:
        if r.route.request_mirror_policies:
            r.metadata.filter_metadata[METADATA_KEY].fields["below"].string_value = threshold(100)

    _each_route(config, edit)


def _json_tag(tags: Mapping[str, RouteTag]) -> Transform:
    """The shape before the tag table: each mirrored route also carries its threshold and its
    rule's tag as JSON (what ``--shadow-tags-in-routes`` still does, for ``mirrorplane collect``)."""

    def edit(r: route_pb2.Route) -> None:
        if r.route.request_mirror_policies:
            name = r.name.removesuffix(MIRRORED_SUFFIX)
            tag = tags.get(name) or tags[name.rpartition("/")[0]]
            meta = r.metadata.filter_metadata[METADATA_KEY]
            meta.fields["below"].string_value = threshold(100)
            meta.fields["tag"].string_value = tag.encode()

    return lambda config: _each_route(config, edit)


def _no_body_limit(config: route_pb2.RouteConfiguration) -> None:
    _each_route(config, lambda r: r.ClearField("request_body_buffer_limit"))


def _no_mirror(config: route_pb2.RouteConfiguration) -> None:
    _each_route(config, lambda r: r.route.ClearField("request_mirror_policies"))


def _keep(config: route_pb2.RouteConfiguration, keep: Callable[[route_pb2.Route], bool]) -> None:
    for vh in config.virtual_hosts:
        kept = [r for r in vh.routes if keep(r)]
        del vh.routes[:]
        vh.routes.extend(kept)


def _one_route_per_rule(config: route_pb2.RouteConfiguration) -> None:
    """Only the mirrored route, without its header matches: what a rule is without the body bound."""
    _keep(config, lambda r: not r.name.endswith(("/not-mirrored", "/grpc" + MIRRORED_SUFFIX)))
    _each_route(config, lambda r: r.match.ClearField("headers"))


WITHIN = rc.HeaderMatcher(
    name="content-length", range_match=range_pb2.Int64Range(start=0, end=DEFAULT_MIRROR_BODY_LIMIT + 1)
)
# The bodyless route's matches, as the translator wrote them before the body header.
BODYLESS = [
    rc.HeaderMatcher(name="content-length", present_match=False),
    rc.HeaderMatcher(name="transfer-encoding", present_match=False),
    rc.HeaderMatcher(
        name=":method",
        string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex="GET|HEAD|DELETE|OPTIONS|TRACE")),
    ),
]


def _is_mirrored_http(r: rc.Route) -> bool:
    return any(h.name == BODY_HEADER for h in r.match.headers)


def _range_only(config: route_pb2.RouteConfiguration) -> None:
    """Two routes per rule, the mirrored one matching only a Content-Length within the bound (it
    mirrors less: no bodyless request)."""

    def edit(r: rc.Route) -> None:
        if _is_mirrored_http(r):
            kept = [h for h in r.match.headers if h.name not in ("content-length", BODY_HEADER)]
            del r.match.headers[:]
            r.match.headers.extend([*kept, WITHIN])

    _each_route(config, edit)


def _three_routes(config: route_pb2.RouteConfiguration) -> None:
    """The shape before the body header: the Content-Length range, then a ``…/no-body`` twin
    (no Content-Length, no Transfer-Encoding, a bodyless :method), then the unmirrored twin."""
    for vh in config.virtual_hosts:
        routes = list(vh.routes)
        del vh.routes[:]
        for r in routes:
            vh.routes.append(r)
            if not _is_mirrored_http(r):
                continue
            kept = [h for h in r.match.headers if h.name not in ("content-length", BODY_HEADER)]
            mirrored = vh.routes[-1]
            del mirrored.match.headers[:]
            mirrored.match.headers.extend([*kept, WITHIN])
            bodyless = vh.routes.add()
            bodyless.CopyFrom(mirrored)
            bodyless.name += "/no-body"
            bodyless.ClearField("request_body_buffer_limit")
            del bodyless.match.headers[:]
            bodyless.match.headers.extend([*kept, *BODYLESS])


def _method_exact(config: route_pb2.RouteConfiguration) -> None:
    """Three routes per rule, the :method regex replaced by an exact match on GET (a diagnostic:
    it mirrors less)."""
    _three_routes(config)

    def edit(r: route_pb2.Route) -> None:
        for h in r.match.headers:
            if h.name == ":method":
                h.string_match.Clear()
                h.string_match.exact = "GET"

    _each_route(config, edit)


def _mirrorable_by_metadata(config: route_pb2.RouteConfiguration) -> None:
    """Two routes per rule, with the body bound decided once per request by a listener filter
    (not adopted; docs/performance.md): the mirrored route matches dynamic metadata that filter
    would set (``mirrorplane.mirrorable``) instead of its Content-Length range, and no bodyless
    twin. Only the route table is pushed: the filter itself would be in the listener."""
    _range_only(config)
    mirrorable = metadata_pb2.MetadataMatcher(
        filter="mirrorplane", path=[metadata_pb2.MetadataMatcher.PathSegment(key="mirrorable")]
    )
    mirrorable.value.bool_match = True

    def edit(r: route_pb2.Route) -> None:
        if r.route.request_mirror_policies:
            kept = [h for h in r.match.headers if h.name != "content-length"]
            del r.match.headers[:]
            r.match.headers.extend(kept)
            r.match.dynamic_metadata.append(mirrorable)

    _each_route(config, edit)


def _no_method_regex(config: route_pb2.RouteConfiguration) -> None:
    """Three routes per rule, but the bodyless twin without its :method regex matcher."""
    _three_routes(config)

    def edit(r: route_pb2.Route) -> None:
        kept = [h for h in r.match.headers if h.name != ":method"]
        del r.match.headers[:]
        r.match.headers.extend(kept)

    _each_route(config, edit)


def _bare(config: route_pb2.RouteConfiguration) -> None:
    """One plain route per rule: path → primary, nothing else."""
    _one_route_per_rule(config)
    _no_metadata(config)
    _no_body_limit(config)
    _no_mirror(config)


VARIANTS: dict[str, Transform | None] = {
    "as translated": lambda c: None,
    "before: three routes per rule (…/no-body)": _three_routes,
    "before: the threshold in every mirrored route": _thresholds,
    "before: the JSON tag in routes": None,  # made from the live tag table (_json_tag)
    "before: a stat_prefix per unmirrored route": _per_route_stat_prefix,
    "one stat_prefix shared by all": _shared_stat_prefix,
    "without request_body_buffer_limit": _no_body_limit,
    "without mirror policies": _no_mirror,
    "three routes, without the :method regex": _no_method_regex,
    "three routes, the :method regex as an exact GET": _method_exact,
    "2 routes/rule, the content-length range only": _range_only,
    "2 routes/rule, mirrorable as dynamic metadata": _mirrorable_by_metadata,
    "1 route/rule (mirrored, no headers)": _one_route_per_rule,
    "1 bare route/rule": _bare,
}


def _host(i: int, per_host: int) -> str:
    return f"host-{i // per_host}.example.com"


def _with_path(config: route_pb2.RouteConfiguration, i: int, path: str, per_host: int) -> route_pb2.RouteConfiguration:
    """A copy whose rule ``i`` (all its Envoy routes) matches ``path`` instead."""
    out = route_pb2.RouteConfiguration()
    out.CopyFrom(config)
    old = f"/r{i}"
    for vh in out.virtual_hosts:
        if vh.domains[0] != _host(i, per_host):
            continue
        for r in vh.routes:
            if r.match.path_separated_prefix == old:
                r.match.path_separated_prefix = path
    return out


async def _stats(envoy: LocalEnvoy) -> tuple[int, float]:
    started = time.perf_counter()
    text = await envoy.admin_get("/stats")
    return text.count("\n"), time.perf_counter() - started


async def run(n: int, rounds: int, concurrencies: list[int], only: list[str], per_host: int) -> None:
    variants = {k: v for k, v in VARIANTS.items() if not only or any(o in k for o in only)}
    echo_port, gw_port, xds_port = free_port(), free_port(), free_port()
    runner = web.AppRunner(build_app(name="backend", out=open("/dev/null", "w")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", echo_port).start()
    options = XdsOptions(bind_address="127.0.0.1", port_map={8000: gw_port})
    url = f"http://127.0.0.1:{gw_port}"
    times: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    stats: dict[tuple[int, str], tuple[int, float]] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "base.yaml").write_text(yaml.safe_dump_all(objects(0, endpoint_port=echo_port)))
        # 16 rules per HTTPRoute (change_latency's files workload) or 1 (its Kubernetes one).
        routes = http_routes(n) if per_host == RULES else [route(i) for i in range(n)]
        (folder / "routes.yaml").write_text(yaml.safe_dump_all(routes))
        plane = ControlPlane(
            FileProvider(folder), xds_host="127.0.0.1", xds_port=xds_port, http_port=None, xds_options=options
        )
        await plane.start()
        live = plane.cache[GATEWAY].resources
        assert live is not None
        (name, base), *_ = live.routes.items()
        shaped: dict[str, route_pb2.RouteConfiguration] = {}
        for label, transform in variants.items():
            config = route_pb2.RouteConfiguration()
            config.CopyFrom(base)
            (transform or _json_tag(plane.comparisons.pairer.tables[GATEWAY]))(config)
            shaped[label] = config
            sizes[label] = config.ByteSize()
        push = 0

        def snapshot(config: route_pb2.RouteConfiguration, i: int, path: str) -> Snapshot:
            resources = Resources(
                clusters=live.clusters,
                endpoints=live.endpoints,
                listeners=live.listeners,
                routes={name: _with_path(config, i, path, per_host)},
            )
            return Snapshot.build(GATEWAY, resources, previous=plane.cache[GATEWAY])

        async with aiohttp.ClientSession() as session:
            for k in range(rounds):
                for concurrency in concurrencies:
                    envoy = LocalEnvoy(
                        node_id=f"shape-{k}-{concurrency}",
                        gateway=GATEWAY,
                        xds_port=xds_port,
                        admin_port=0,
                        log_sink=lambda _: None,
                        concurrency=concurrency,
                    )
                    await envoy.start()
                    pid = envoy.pid
                    assert pid is not None  # started
                    await asyncio.wait_for(until_served(session, f"{url}/r0", "host-0.example.com", 0), 60)
                    order = list(variants) if k % 2 == 0 else list(reversed(variants))
                    for label in order:
                        for timed in (False, True):
                            push += 1
                            i = (push * 7919) % (n - 1) + 1
                            path = f"/r{i}-p{push}"
                            snap = snapshot(shaped[label], i, path)
                            await asyncio.sleep(0.05)
                            started, used = time.perf_counter(), cpu_seconds(pid)
                            plane.cache.install(snap)
                            took = await asyncio.wait_for(
                                until_served(session, url + path, _host(i, per_host), started), 60
                            )
                            if timed:
                                times.setdefault((concurrency, label), []).append(took)
                                cpu.setdefault((concurrency, label), []).append(cpu_seconds(pid) - used)
                        if k == 0:
                            stats[(concurrency, label)] = await _stats(envoy)
                    await envoy.stop()
        await plane.stop()
    await runner.cleanup()
    print(f"N={n}, {per_host} per host, {rounds} rounds, median of the second push of each variant (ms)")
    first = concurrencies[0]
    header = " | ".join(f"concurrency {c}" for c in concurrencies)
    print(f"{'variant':<46} | {'bytes':>9} | {header} | Envoy CPU (c={first}) | stats lines (c={first}), /stats ms")
    reference = {c: statistics.median(times[(c, next(iter(variants)))]) for c in concurrencies}
    cpu_reference = statistics.median(cpu[(first, next(iter(variants)))])
    for label in variants:
        cells = []
        for c in concurrencies:
            m = statistics.median(times[(c, label)])
            cells.append(f"{m * 1e3:7.0f} ({m / reference[c]:4.2f}x)")
        used = statistics.median(cpu[(first, label)])
        cells.append(f"{used * 1e3:9.0f} ({used / cpu_reference:4.2f}x)")
        lines, took = stats[(first, label)]
        print(f"{label:<46} | {sizes[label]:>9} | {' | '.join(cells)} | {lines:>7} {took * 1e3:6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="*", default=[], help="variants whose label contains one of these")
    parser.add_argument("--rules-per-host", type=int, choices=(1, RULES), default=RULES)
    args = parser.parse_args()
    asyncio.run(run(args.routes, args.rounds, args.concurrency, args.only, args.rules_per_host))


if __name__ == "__main__":
    main()
