"""``mirrorplane nodes | status | snapshot``: the admin API from a terminal.

Text by default, for people; ``-o json`` prints the same JSON value as grpcurl for the same call
(protobuf JSON with the .proto field names; not the same bytes), for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from ..errors import MirrorplaneError, UsageError
from ..gatewayapi.status import conditions_in, is_problem
from ..tls import read_pem
from .v1 import admin_pb2, admin_pb2_grpc

DEFAULT_SERVER = os.environ.get("MIRRORPLANE_SERVER", "127.0.0.1:18000")
# Conditions whose healthy value is False (Gateway API).


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every client command shares."""
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        help=f"mirrorplane's xDS port, HOST:PORT (default {DEFAULT_SERVER}; env MIRRORPLANE_SERVER)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="text (default) or json (the same JSON value grpcurl prints)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    tls = parser.add_argument_group("TLS (when serve has --tls-cert; names as grpcurl's)")
    tls.add_argument("--cacert", type=Path, help="PEM CA that signed the server's certificate: connect with TLS")
    tls.add_argument("--cert", type=Path, help="PEM client certificate, for mutual TLS (serve --client-ca)")
    tls.add_argument("--key", type=Path, help="PEM private key of --cert")
    tls.add_argument("--servername", help="the name to verify the server's certificate against (default: HOST)")


def channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS when --cacert is given (with a client certificate for mutual TLS)."""
    if args.cacert is None:
        if args.cert or args.key:
            raise UsageError("--cert and --key need --cacert")
        return grpc.insecure_channel(args.server)
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    credentials = grpc.ssl_channel_credentials(
        read_pem(args.cacert, "--cacert"),
        read_pem(args.key, "--key") if args.key else None,
        read_pem(args.cert, "--cert") if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.servername)] if args.servername else []
    return grpc.secure_channel(args.server, credentials, options=options)


def run(args: argparse.Namespace) -> int:
    """Run one client command; a failed call is one line on stderr and exit code 1."""
    try:
        with channel(args) as ch:
            response, render = COMMANDS[args.command](admin_pb2_grpc.AdminStub(ch), args)
    except MirrorplaneError as e:
        print(f"mirrorplane {args.command}: error: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        code = e.code()
        detail = e.details()
        if code is grpc.StatusCode.UNAVAILABLE:
            detail = f"cannot reach mirrorplane at {args.server}: {detail}"
        print(f"mirrorplane {args.command}: {code.name}: {detail}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(to_json(response), indent=2))
    else:
        sys.stdout.write(render(response))
    return 0


def to_json(message: Message) -> Any:
    """Protobuf JSON as grpcurl prints it: Struct numbers that are whole print as integers."""
    return _whole(json_format.MessageToDict(message, preserving_proto_field_name=True))


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


# -- the calls ---------------------------------------------------------------------------------


# A command's response and the function that renders it as text.
_Answer = tuple[Message, Callable[[Any], str]]


def _nodes(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> _Answer:
    request = admin_pb2.ListNodesRequest(gateway=args.gateway or "", node_id=args.node or "")
    return stub.ListNodes(request, timeout=args.timeout), render_nodes


def _status(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> _Answer:
    request = admin_pb2.GetStatusRequest(kind=args.kind or "", namespace=args.namespace or "", name=args.name or "")
    return stub.GetStatus(request, timeout=args.timeout), render_status


def _snapshot(stub: admin_pb2_grpc.AdminStub, args: argparse.Namespace) -> _Answer:
    request = admin_pb2.GetSnapshotRequest(
        gateway=args.gateway or "", node_id=args.node or "", types=args.type or [], names=args.name or []
    )
    return stub.GetSnapshot(request, timeout=args.timeout), render_snapshot


COMMANDS = {"nodes": _nodes, "status": _status, "snapshot": _snapshot}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``nodes``, ``status`` and ``snapshot`` on the ``mirrorplane`` parser."""
    p = sub.add_parser("nodes", help="every connected Envoy: what it was sent, ACKed and NACKed (admin API)")
    p.add_argument("--gateway", help="only Envoys serving this Gateway, NAMESPACE/NAME")
    p.add_argument("--node", help="only this node id")
    add_arguments(p)

    p = sub.add_parser("status", help="the Gateway API status of every object (admin API)")
    p.add_argument("--kind", help="only this kind, e.g. HTTPRoute")
    p.add_argument("--namespace", "-n", help="only this namespace")
    p.add_argument("--name", help="only objects of this name")
    add_arguments(p)

    p = sub.add_parser("snapshot", help="the Envoy resources a Gateway serves, with versions (admin API)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--gateway", help="the Gateway, NAMESPACE/NAME")
    target.add_argument("--node", help="the Gateway this node id serves")
    p.add_argument("--type", action="append", help="clusters, endpoints, listeners or routes (repeatable; default all)")
    p.add_argument("--name", action="append", help="only resources of this name (repeatable)")
    add_arguments(p)


# -- text --------------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def _ago(ts: Any, now: float) -> str:
    seconds = max(0.0, now - ts.ToNanoseconds() / 1e9)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _type_state(t: admin_pb2.TypeState, now: float) -> str:
    if not t.sent_version:
        return "not sent yet"
    if t.in_flight:
        return f"sent {_ago(t.sent_at, now)}, waiting for ACK"
    if t.nacked:
        message = " ".join(t.last_nack.error_detail.split())
        return f"NACKED {_ago(t.last_nack.at, now)} (runs {t.acked_version or 'nothing'}): {message}"
    latency = t.ack_latency.ToNanoseconds() / 1e6
    return f"ACKED in {latency:.1f}ms" if t.HasField("ack_latency") else "ACKED (had it on reconnect)"


def render_nodes(response: admin_pb2.ListNodesResponse, now: float | None = None) -> str:
    if not response.nodes:
        return "no Envoy connected\n"
    now = time.time() if now is None else now
    blocks = []
    for node in response.nodes:
        header = [
            ["NODE", "GATEWAY", "ADDRESS", "AGENT", "CONNECTED", "SNAPSHOT"],
            [
                node.node_id,
                node.gateway,
                node.address,
                node.user_agent or "?",
                _ago(node.connected_since, now),
                node.snapshot_version or "(none yet)",
            ],
        ]
        block = table(header)
        if node.types:
            rows = [["TYPE", "SENT", "ACKED", "STATE"]]
            rows += [[t.type, t.sent_version or "-", t.acked_version or "-", _type_state(t, now)] for t in node.types]
            block += table(rows, indent="  ")
        if node.held_clusters:
            block += f"  held until routes move off them: {', '.join(node.held_clusters)}\n"
        blocks.append(block)
    return "\n".join(blocks)


def render_status(response: admin_pb2.GetStatusResponse) -> str:
    if not response.objects:
        return "no objects\n"
    rows = [["KIND", "NAMESPACE", "NAME", "WHERE", "CONDITIONS"]]
    problems = []
    for obj in response.objects:
        body = json_format.MessageToDict(obj.status)
        grouped: dict[str, list[str]] = {}
        for where, c in conditions_in(body):
            grouped.setdefault(where, []).append(f"{c['type']}={c['status']}")
            if is_problem(c):
                what = f"{obj.kind} {obj.namespace + '/' if obj.namespace else ''}{obj.name}"
                problems.append(
                    f"{what}{' ' + where if where else ''}: {c['type']}={c['status']} {c['reason']}: {c.get('message', '')}"
                )
        first = True
        for where, conds in (grouped or {"": []}).items():
            lead = [obj.kind, obj.namespace, obj.name] if first else ["", "", ""]
            rows.append([*lead, where or "-", " ".join(conds)])
            first = False
    out = table(rows)
    if problems:
        out += "\nproblems:\n" + "".join(f"  {p}\n" for p in problems)
    return out


def render_snapshot(response: admin_pb2.GetSnapshotResponse) -> str:
    out = [f"Gateway {response.gateway}  snapshot {response.version}\n"]
    for rs in response.types:
        out.append(f"\n{rs.type} (version {rs.version}, {len(rs.resources)} shown)\n")
        if rs.resources:
            out.append(table([[r.name, r.version] for r in rs.resources], indent="  "))
        if rs.type == "routes":
            out.extend(_mirror_bounds(rs))
    out.append("\n-o json prints every resource in full.\n")
    return "".join(out)


def _mirror_bounds(rs: admin_pb2.ResourceSet) -> list[str]:
    """The mirror body bound each route table enforces, read back from the served routes: every
    mirrored route buffers bound + head room (the bound itself is in the listener's verdict).
    Imported here: only this command needs the translator's Envoy messages."""
    from ..xds.translator import MIRROR_HEAD_ROOM

    out = []
    for r in rs.resources:
        config = json_format.MessageToDict(r.resource)
        limits = {
            int(route["request_body_buffer_limit"]) - MIRROR_HEAD_ROOM
            for vh in config.get("virtual_hosts", [])
            for route in vh.get("routes", [])
            if route.get("route", {}).get("request_mirror_policies") and "request_body_buffer_limit" in route
        }
        for limit in sorted(limits):
            out.append(
                f"  {r.name}: mirrors bodies up to {limit} bytes; larger or unknown-size ones are not mirrored "
                "(Envoy counts them: mirrorplane.not_mirrored.route.*)\n"
            )
    return out
