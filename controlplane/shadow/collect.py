"""``mirrorplane collect``: the access log receiver in a process of its own.

For a fleet whose log entries would take too much of the control plane's CPU (one receiver
process holds the rate benchmarks/shadow.py measures): Envoys point their ``mirrorplane_als``
cluster at it (``mirrorplane bootstrap --als-address``), the control plane puts the shadow tags
into the routes (``--shadow-tags-in-routes``: there is no controller here to publish a tag
table), and it serves what serve would: the ``Shadow`` admin service (``mirrorplane diff
--server``), /metrics and health. The same rules as serve: loopback unless told, mutual TLS
beyond it, Gateway identities for ALS streams and the operator identity for the admin service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST

from ..exposure import exposure_error, host_port
from ..identity import Authorizer, OperatorOnly
from ..tls import TlsFiles, server_credentials
from .bodyreport import BODIES_SERVICE_NAME, BodyReceiver, bodies_service
from .hub import Comparisons
from .pairing import DEFAULT_LIMIT, DEFAULT_WINDOW
from .receiver import ALS_SERVICE_NAME, AccessLogReceiver, als_service
from .service import expire_forever, shadow_service

log = logging.getLogger("mirrorplane.collect")


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "collect",
        help="shadow testing's access log receiver alone, for a large fleet; the control plane then runs with "
        "--shadow-tags-in-routes (docs/shadow-testing.md)",
    )
    p.add_argument("--address", default="127.0.0.1", help="address both ports bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=18090, help="gRPC port: ALS from Envoys, the Shadow admin service (default 18090)"
    )
    p.add_argument("--http-port", type=int, default=19091, help="HTTP port: /metrics, /healthz (default 19091)")
    p.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW,
        help=f"seconds a leg waits for the other (default {DEFAULT_WINDOW:g})",
    )
    p.add_argument(
        "--pending-limit", type=int, default=DEFAULT_LIMIT, help=f"requests waiting at once (default {DEFAULT_LIMIT})"
    )
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument(
        "--client-ca", type=Path, help="mutual TLS: Envoys present their Gateway's certificate, operators theirs"
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without mutual TLS")
    return p


class Collector:
    def __init__(self, args: argparse.Namespace) -> None:
        self.tls = TlsFiles(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
        problem = exposure_error(args.address, self.tls, args.insecure)
        if problem:
            raise ValueError(problem.replace("--xds-address", "--address"))
        self.address = host_port(args.address, args.port)
        self.http = (args.address, args.http_port)
        self.comparisons = Comparisons(window=args.window, limit=args.pending_limit)
        self.authorizer = Authorizer(enforced=self.tls is not None and self.tls.mutual)

    async def run(self) -> None:
        server = grpc.aio.server(
            interceptors=[OperatorOnly([ALS_SERVICE_NAME, BODIES_SERVICE_NAME])] if self.authorizer.enforced else []
        )
        names = [health.SERVICE_NAME]
        for name, add in (
            als_service(AccessLogReceiver(self.comparisons, self.authorizer)),
            bodies_service(BodyReceiver(self.comparisons.add_bodies, self.comparisons.count, self.authorizer)),
            shadow_service(self.comparisons),
        ):
            add(server)
            names.append(name)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
        if self.tls:
            server.add_secure_port(self.address, server_credentials(self.tls))
        else:
            server.add_insecure_port(self.address)
        await server.start()
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *self.http).start()
        expire = asyncio.create_task(expire_forever(self.comparisons))
        log.info(
            "collect.started grpc=%s http=%s security=%s",
            self.address,
            host_port(*self.http),
            "mtls-identities" if self.authorizer.enforced else ("tls" if self.tls else "plaintext"),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        expire.cancel()
        await server.stop(0)
        await runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.comparisons.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def main(args: argparse.Namespace) -> int:
    try:
        asyncio.run(Collector(args).run())
    except (OSError, ValueError) as e:
        print(f"mirrorplane collect: error: {e}", file=sys.stderr)
        return 1
    return 0
