"""What the body bound costs Envoy per request, as decided before route selection and before.

    python -m benchmarks.body_verdict [--requests 20000] [--rounds 3]

Three static Envoys (one worker each), one route table each, every route a direct response, so
that what differs is only how the route is chosen: a plain route; the three routes per rule of
before (a Content-Length range, then no Content-Length, no Transfer-Encoding and a :method
regex, then the unmirrored twin); and the two of now (the listener's early header mutation
evaluates the CEL verdict, the mirrored route matches it exactly). A GET and a POST with
``content-length: 0`` alternate on 8 keep-alive HTTP/1.1 connections (the GET takes the
bodyless route before). Reported: the CPU time Envoy's threads used per request (Linux
schedstat), which other work on the machine barely moves, Envoys interleaved round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import json_format
from google.protobuf.message import Message

from controlplane.localenvoy import envoy_binary
from controlplane.ports import free_port
from controlplane.xds.translator import DEFAULT_MIRROR_BODY_LIMIT, MIRRORABLE, body_verdict

from .procstat import cpu_seconds
from .route_shape import BODYLESS, WITHIN

_REQUESTS = (b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n", b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
_CONNECTIONS = 8


def _route(name: str, headers: list[rc.HeaderMatcher] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix": "/", **({"headers": [_dict(h) for h in headers]} if headers else {})}
    return {"name": name, "match": match, "direct_response": {"status": 200}}


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _config(shape: str, port: int, admin: int) -> dict[str, Any]:
    """A static Envoy's config: the route table of ``shape``, with the translator's own matchers
    and early header mutation (route_shape's for the shape before)."""
    routes, early = [_route("plain")], []
    if shape == "three routes (before)":
        routes = [_route("m", [WITHIN]), _route("m/no-body", BODYLESS), _route("m/not-mirrored")]
    elif shape == "two routes, the CEL verdict":
        routes = [_route("m", [MIRRORABLE]), _route("m/not-mirrored")]
        early = [_dict(body_verdict(DEFAULT_MIRROR_BODY_LIMIT))]
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "l",
        "route_config": {"name": "rc", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
        **({"early_header_mutation_extensions": early} if early else {}),
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{"name": "l", "address": address, "filter_chains": [{"filters": [hcm]}]}]},
    }


async def _connection(port: int, count: int, first: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(count):
        writer.write(_REQUESTS[(i + first) % 2])
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()


async def _load(port: int, requests: int) -> None:
    await asyncio.gather(*(_connection(port, requests // _CONNECTIONS, k) for k in range(_CONNECTIONS)))


async def run(requests: int, rounds: int) -> None:
    shapes = ("plain route", "three routes (before)", "two routes, the CEL verdict")
    used: dict[str, list[float]] = {s: [] for s in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        envoys: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for shape in shapes:
                port = free_port()
                path = Path(tmp) / f"{len(envoys)}.json"
                path.write_text(json.dumps(_config(shape, port, free_port())))
                args = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "error"]
                envoys[shape] = (subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port)
            for _, port in envoys.values():  # up, and warm
                for _ in range(200):
                    try:
                        await _load(port, requests // 10)
                        break
                    except OSError:
                        await asyncio.sleep(0.05)
            for k in range(rounds):
                for shape in shapes if k % 2 == 0 else reversed(shapes):
                    process, port = envoys[shape]
                    before = cpu_seconds(process.pid)
                    await _load(port, requests)
                    used[shape].append((cpu_seconds(process.pid) - before) / requests)
        finally:
            for process, _ in envoys.values():
                process.terminate()
                process.wait()
    print(f"Envoy CPU per request (µs, one worker), {requests} requests × {rounds} rounds, interleaved")
    reference = statistics.median(used[shapes[0]])
    for shape in shapes:
        m = statistics.median(used[shape])
        runs = ", ".join(f"{u * 1e6:.1f}" for u in used[shape])
        print(f"{shape:<30} median {m * 1e6:5.1f} µs ({m / reference:4.2f}x the plain route) | {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
