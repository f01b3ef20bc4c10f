"""The admin side of shadow testing: ``mirrorplane.shadow.v1.Shadow`` (protos/controlplane/shadow/v1).

Read-only over :class:`.hub.Comparisons`; with mutual TLS the operator-only interceptor guards it
like the rest of the admin API.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from .entries import Leg
from .hub import Comparisons, Diff, RuleStats, percentile
from .receiver import ServiceAdder
from .v1 import shadow_pb2, shadow_pb2_grpc

SHADOW_SERVICE_NAME = shadow_pb2.DESCRIPTOR.services_by_name["Shadow"].full_name


def route_matches(wanted: str, route: str) -> bool:
    """``wanted`` NS/NAME (or "KIND NS/NAME") against a route shown as "KIND NS/NAME"."""
    return not wanted or route == wanted or route.partition(" ")[2] == wanted


def selected(gateway: str, route: str, want_gateway: str, want_route: str) -> bool:
    return (not want_gateway or gateway == want_gateway) and route_matches(want_route, route)


def leg_message(leg: Leg | None) -> shadow_pb2.Leg:
    if leg is None:
        return shadow_pb2.Leg(size=-1, failure="no entry")
    return shadow_pb2.Leg(
        status=leg.status,
        grpc_status=leg.grpc_status,
        size=leg.size,
        digest=leg.digest,
        excerpt=leg.excerpt,
        latency_seconds=leg.latency,
        failure=leg.failure,
        headers=leg.headers,
    )


def diff_message(d: Diff) -> shadow_pb2.DifferingPair:
    either = d.primary or d.mirror_leg
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(int(d.at * 1e9))
    return shadow_pb2.DifferingPair(
        gateway=d.gateway,
        route=d.route,
        rule=d.rule,
        mirror=d.mirror,
        result=d.result,
        request_id=d.request_id,
        method=either.method if either else "",
        path=(d.primary or either).path if either else "",
        primary=leg_message(d.primary),
        mirror_leg=leg_message(d.mirror_leg),
        at=at,
        detail=d.detail,
    )


def _latency(samples: deque[float]) -> shadow_pb2.Latency:
    return shadow_pb2.Latency(
        count=len(samples),
        p50_seconds=percentile(samples, 0.5),
        p90_seconds=percentile(samples, 0.9),
        p99_seconds=percentile(samples, 0.99),
    )


def rule_message(key: tuple[str, str, str, str], stats: RuleStats) -> shadow_pb2.RuleComparison:
    gateway, route, rule, mirror = key
    return shadow_pb2.RuleComparison(
        gateway=gateway,
        route=route,
        rule=rule,
        mirror=mirror,
        results=dict(stats.results),
        primary_latency=_latency(stats.primary),
        mirror_latency=_latency(stats.mirror),
        recent=[diff_message(d) for d in stats.recent],
    )


class ShadowServicer(shadow_pb2_grpc.ShadowServicer):
    def __init__(self, comparisons: Comparisons) -> None:
        self.comparisons = comparisons

    async def GetComparisons(  # noqa: N802 - the gRPC method's name
        self, request: shadow_pb2.GetComparisonsRequest, context: grpc.aio.ServicerContext
    ) -> shadow_pb2.GetComparisonsResponse:
        c = self.comparisons
        rules = [
            rule_message(key, stats)
            for key, stats in sorted(c.rules.items())
            if selected(key[0], key[1], request.gateway, request.route)
        ]
        receiver = shadow_pb2.Receiver(
            entries=dict(c.entries), pending=len(c.pairer), pending_limit=c.pairer.limit, window_seconds=c.pairer.window
        )
        return shadow_pb2.GetComparisonsResponse(rules=rules, receiver=receiver)

    async def WatchDiffs(  # noqa: N802 - the gRPC method's name
        self, request: shadow_pb2.WatchDiffsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[shadow_pb2.DifferingPair]:
        q = self.comparisons.watch()
        try:
            while True:
                diff = await q.get()
                if diff is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "watcher fell too far behind; watch again")
                    return
                if selected(diff.gateway, diff.route, request.gateway, request.route):
                    yield diff_message(diff)
        finally:
            self.comparisons.watchers.discard(q)


def shadow_service(comparisons: Comparisons) -> tuple[str, ServiceAdder]:
    servicer = ShadowServicer(comparisons)
    return SHADOW_SERVICE_NAME, lambda server: shadow_pb2_grpc.add_ShadowServicer_to_server(servicer, server)


async def expire_forever(comparisons: Comparisons, every: float = 1.0) -> None:
    """Unpaired legs are counted when their window ends even if no entry arrives after them."""
    while True:
        await asyncio.sleep(every)
        comparisons.expire()
