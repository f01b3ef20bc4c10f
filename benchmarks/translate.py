"""Translate and serialize N mirrored HTTPRoutes, phase by phase.

    python -m benchmarks.translate [N ...]        (default: 100 1000 10000)

Then the same N routes through the controller, as the server runs it: the first update, then one
route changed (median of 7), which attaches only that route again and re-serializes only its
virtual host; then one Service of the 100 changed (median of 7 each): a label, which the store's
diff leaves out, and a port's appProtocol, which compiles again the N/50 routes using it. Each
with its CPU time (steadier on a shared machine) and its wall-clock time. And the controller on
issue 12's workload (``benchmarks.change_latency``: the same N rules written as ⌈N/16⌉
HTTPRoutes of 16 rules).

Phases: validate (CRD schema + CEL, as the file provider does), translate (Gateway API → IR),
build (IR → Envoy resources, as the controller's first update builds them: RouteConfigurations
written as bytes, xds/encoded.py), serialize (the snapshot: every resource once, hashed). The baseline
is a bare ``SerializeToString`` of the finished RouteConfiguration in the same process: the floor
any protobuf-based control plane pays for this many routes.
"""

from __future__ import annotations

import copy
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.gcpause import paused_gc
from controlplane.xds.cache import Snapshot, SnapshotCache
from controlplane.xds.encoded import EncodedMemo
from controlplane.xds.translator import build_resources

from .workload import NAMESPACE, objects, route

_T = TypeVar("_T")
CHANGES = 7


def _timed(fn: Callable[..., _T], *args: object) -> tuple[_T, float]:
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def _phase(name: str, fn: Callable[[], _T], figures: list[str]) -> tuple[_T, float]:
    """``fn()`` and its wall-clock time, noted in ``figures`` with its CPU time beside it."""
    out, cpu, wall = _clocked(fn)
    figures.append(f"{name} {wall * 1e3:7.1f} ms (CPU {cpu * 1e3:6.1f})")
    return out, wall


def _clocked(fn: Callable[..., _T], *args: object) -> tuple[_T, float, float]:
    """``fn(*args)``, its CPU time and its wall-clock time (CPU time is the steadier figure on a
    shared machine)."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def run(n: int) -> None:
    raw = objects(n)
    valid, t_validate = _timed(lambda: [from_dict(schema.validate(o)) for o in raw])
    store = Store.from_objects(valid)
    cpu = time.process_time()
    phases: list[str] = []
    with paused_gc():  # as the controller runs them
        result, t_translate = _phase("translate", lambda: translate(store), phases)
        gateway = result.gateways[f"{NAMESPACE}/gw"]
        resources, t_build = _phase("build", lambda: build_resources(gateway, memo=EncodedMemo()), phases)
    _, t_serialize = _phase("serialize", lambda: Snapshot.build(f"{NAMESPACE}/gw", resources), phases)
    cpu = time.process_time() - cpu
    route_config = next(iter(resources.routes.values()))
    blob, t_floor = _timed(lambda: route_config.SerializeToString(deterministic=True))
    total = t_translate + t_build + t_serialize
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    routes = sum(len(vh.routes) for vh in route_config.virtual_hosts)
    print(
        f"N={n:>6} routes={routes:>6} | validate {t_validate * 1e3:8.1f} ms | "
        + " | ".join(phases)
        + f" | translate+build+serialize {total * 1e3:7.1f} ms, CPU {cpu * 1e3:7.1f} ms ({total / t_floor:5.1f}x the"
        f" bare serialize floor of {t_floor * 1e3:.1f} ms, {len(blob) / 1e6:.1f} MB) | peak RSS {rss:.0f} MiB"
    )
    controller = Controller(SnapshotCache())
    _, cold_cpu, cold_wall = _clocked(controller.update, store)
    edits = [route(n // 2 + k, tag=f"-edit-{k}") for k in range(CHANGES)]
    store, cpu_, wall = _changes(controller, store, edits)
    print(
        f"N={n:>6} controller | first update CPU {cold_cpu * 1e3:7.1f} ms, wall {cold_wall * 1e3:7.1f} ms"
        f" | one route changed (median of {CHANGES}): CPU {cpu_ * 1e3:6.1f} ms, wall {wall * 1e3:6.1f} ms"
        f" ({cpu_ / cold_cpu * 100:4.1f}% of the first; {wall / t_floor:5.2f}x the bare serialize floor)"
    )
    services = [copy.deepcopy(o) for o in raw if o["kind"] == "Service" and o["metadata"]["name"].startswith("svc-")]
    figures = []
    for what, services_ in (("a label", services[:CHANGES]), ("appProtocol", services[CHANGES : 2 * CHANGES])):
        for k, service in enumerate(services_):
            if what == "a label":
                service["metadata"]["labels"] = {"edited": str(k)}
            else:
                service["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
        store, cpu_, wall = _changes(controller, store, services_)
        figures.append(f"{what}: CPU {cpu_ * 1e3:6.1f} ms, wall {wall * 1e3:6.1f} ms")
    print(f"N={n:>6} controller | one Service changed (median of {CHANGES}), " + " | ".join(figures))


def _changes(controller: Controller, store: Store, docs: list[dict[str, Any]]) -> tuple[Store, float, float]:
    """The store after each of ``docs`` replaced its object in turn, each handed to the
    controller, and the median CPU and wall-clock time of those updates."""
    cpus, walls = [], []
    for doc in docs:
        edited = from_dict(schema.validate(doc))
        store = Store.from_objects([*(o for o in store.objects() if o.key != edited.key), edited])
        _, change_cpu, change_wall = _clocked(controller.update, store)
        cpus.append(change_cpu)
        walls.append(change_wall)
    return store, statistics.median(cpus), statistics.median(walls)


def run_grouped(n: int) -> None:
    """The controller on issue 12's workload: the same N rules as ⌈N/16⌉ HTTPRoutes of 16 rules,
    one rule's path changed per update (the whole 16-rule virtual host is encoded again)."""
    from .change_latency import http_routes

    docs = http_routes(n)
    store = Store.from_objects(from_dict(schema.validate(o)) for o in objects(0) + docs)
    phases: list[str] = []
    with paused_gc():
        result, _ = _phase("translate", lambda: translate(store), phases)
        gateway = result.gateways[f"{NAMESPACE}/gw"]
        _phase("build", lambda: build_resources(gateway, memo=EncodedMemo()), phases)
    controller = Controller(SnapshotCache())
    _, cold_cpu, cold_wall = _clocked(controller.update, store)
    cpus, walls = [], []
    for k in range(CHANGES):
        doc = copy.deepcopy(docs[(len(docs) // 2 + k) % len(docs)])
        doc["spec"]["rules"][3]["matches"][0]["path"]["value"] += f"-edit-{k}"
        edited = from_dict(schema.validate(doc))
        store = Store.from_objects([*(o for o in store.objects() if o.key != edited.key), edited])
        _, change_cpu, change_wall = _clocked(controller.update, store)
        cpus.append(change_cpu)
        walls.append(change_wall)
    print(
        f"N={n:>6} controller, {len(docs)} HTTPRoutes of 16 rules | "
        + " | ".join(phases)
        + f" | first update CPU {cold_cpu * 1e3:7.1f} ms,"
        f" wall {cold_wall * 1e3:7.1f} ms | one rule changed (median of {CHANGES}):"
        f" CPU {statistics.median(cpus) * 1e3:6.1f} ms, wall {statistics.median(walls) * 1e3:6.1f} ms"
    )


def validation_per_object() -> None:
    """CPU time of schema.validate per object, best of 3 (CPU time: the machine is shared)."""
    from .change_latency import http_routes  # the 16-rule HTTPRoutes of that benchmark

    base = objects(0)
    groups = {
        "HTTPRoute with 16 mirrored rules": http_routes(160),
        "HTTPRoute with 1 mirrored rule": [route(i) for i in range(200)],
        "Service / EndpointSlice": base[2:],
    }
    figures = []
    for name, docs in groups.items():
        schema.validate(docs[0])  # compile the kind first
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for doc in docs:
                schema.validate(doc)
            best = min(best, (time.process_time() - started) / len(docs))
        figures.append(f"{name} {best * 1e6:,.0f} µs")
    print("schema.validate per object (CPU): " + " | ".join(figures))


def main(argv: list[str]) -> None:
    validation_per_object()
    for n in [int(a) for a in argv] or [100, 1000, 10000]:
        run(n)
        run_grouped(n)


if __name__ == "__main__":
    main(sys.argv[1:])
