"""``mirrorplane diff``: how each mirror answered compared with the primary, from a terminal.

A client of the ``mirrorplane.shadow.v1.Shadow`` service (on the xDS port, or on ``mirrorplane
collect``'s port); ``-o json`` prints the same JSON value grpcurl prints, ``-w`` keeps printing
each differing pair as it is found.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import grpc

from ..admin.client import add_arguments, channel, table, to_json
from .compare import RESULTS
from .v1 import shadow_pb2, shadow_pb2_grpc

_COLUMNS = {
    "same": "SAME",
    "status_differs": "STATUS",
    "body_differs": "BODY",
    "headers_differ": "HEADERS",
    "mirror_failed": "FAILED",
    "unpaired": "UNPAIRED",
}


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff", help="shadow testing: how each mirror answered compared with the primary, per route rule"
    )
    p.add_argument("--gateway", default="", help="only this Gateway, NAMESPACE/NAME")
    p.add_argument("--route", default="", help="only this route, NAMESPACE/NAME")
    p.add_argument(
        "-w", "--watch", action="store_true", help="then print each differing pair as it is found (Ctrl-C ends)"
    )
    add_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        with channel(args) as ch:
            stub = shadow_pb2_grpc.ShadowStub(ch)
            response = stub.GetComparisons(
                shadow_pb2.GetComparisonsRequest(gateway=args.gateway, route=args.route), timeout=args.timeout
            )
            if args.output == "json":
                print(json.dumps(to_json(response), indent=2), flush=True)
            else:
                sys.stdout.write(render(response))
                sys.stdout.flush()
            if args.watch:
                _watch(stub, args)
    except (OSError, ValueError) as e:
        print(f"mirrorplane diff: error: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        code, detail = e.code(), e.details()
        if code is grpc.StatusCode.UNAVAILABLE:
            detail = f"cannot reach mirrorplane at {args.server}: {detail}"
        print(f"mirrorplane diff: {code.name}: {detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _watch(stub: shadow_pb2_grpc.ShadowStub, args: argparse.Namespace) -> None:
    if args.output != "json":
        print("\nwatching for differing pairs (Ctrl-C ends):", flush=True)
    for pair in stub.WatchDiffs(shadow_pb2.WatchDiffsRequest(gateway=args.gateway, route=args.route)):
        if args.output == "json":
            print(json.dumps(to_json(pair)), flush=True)
        else:
            print(_pair_line(pair, with_rule=True), flush=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def _leg(leg: shadow_pb2.Leg) -> str:
    if leg.failure:
        return f"- ({leg.failure})"
    status = str(leg.status) + (f"/grpc {leg.grpc_status}" if leg.grpc_status else "")
    size = f"{leg.size}B" if leg.size >= 0 else "?B"
    return f"{status} {size} {_ms(leg.latency_seconds)}" + (f" {leg.digest[:12]}" if leg.digest else "")


def _pair_line(p: shadow_pb2.DifferingPair, *, with_rule: bool = False) -> str:
    at = datetime.fromtimestamp(p.at.ToNanoseconds() / 1e9, tz=UTC).strftime("%H:%M:%S")
    where = f"{p.gateway} {p.route} rule {p.rule} -> {p.mirror}  " if with_rule else ""
    legs = f"primary {_leg(p.primary)}  mirror {_leg(p.mirror_leg)}"
    return f"{at}  {where}{p.result:<15} {p.request_id}  {p.method} {p.path}  {legs}  {p.detail}"


def render(response: shadow_pb2.GetComparisonsResponse) -> str:
    if not response.rules:
        out = "no mirrored request compared yet\n"
    else:
        rows = [
            [
                "GATEWAY",
                "ROUTE",
                "RULE",
                "MIRROR",
                "PAIRS",
                *_COLUMNS.values(),
                "DIFFER",
                "PRIMARY p50/p99",
                "MIRROR p50/p99",
            ]
        ]
        for r in response.rules:
            total = sum(r.results.values())
            differing = total - r.results.get("same", 0)
            rows.append(
                [
                    r.gateway,
                    r.route,
                    r.rule,
                    r.mirror,
                    str(total),
                    *(str(r.results.get(k, 0)) for k in RESULTS),
                    f"{100 * differing / total:.0f}%" if total else "-",
                    f"{_ms(r.primary_latency.p50_seconds)}/{_ms(r.primary_latency.p99_seconds)}",
                    f"{_ms(r.mirror_latency.p50_seconds)}/{_ms(r.mirror_latency.p99_seconds)}",
                ]
            )
        out = table(rows)
        recent = [(r, p) for r in response.rules for p in r.recent]
        if recent:
            out += "\nlast differing pairs:\n"
            for r, p in sorted(recent, key=lambda rp: rp[1].at.ToNanoseconds())[-20:]:
                out += f"  {_pair_line(p)}  [{r.route} rule {r.rule}]\n"
    rx = response.receiver
    dropped = {k: v for k, v in rx.entries.items() if k.startswith("dropped") or k == "malformed"}
    out += f"\nreceiver: {rx.entries.get('received', 0)} entries, {rx.pending} waiting for their other leg"
    out += f" (at most {rx.pending_limit}, {rx.window_seconds:g}s)"
    out += (", dropped " + ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) if dropped else "") + "\n"
    return out
