"""The running control plane: provider → controller → snapshot cache → ADS server.

One object owns the lifecycle so that the CLI, local mode and the end-to-end tests start
exactly the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .controller import Controller
from .gatewayapi.translator import Options
from .providers.base import Provider
from .tls import TlsFiles, server_credentials
from .xds.cache import SnapshotCache
from .xds.server import build_server
from .xds.tracking import NodeRegistry
from .xds.translator import XdsOptions

log = logging.getLogger("mirrorplane.serve")


class ControlPlane:
    """Serve the objects of a provider (a folder, a cluster) over ADS until stopped."""

    def __init__(
        self,
        provider: Provider,
        *,
        xds_host: str = "0.0.0.0",
        xds_port: int = 18000,
        http_host: str = "0.0.0.0",
        http_port: int | None = 19001,
        options: Options = Options(),
        xds_options: XdsOptions = XdsOptions(),
        tls: TlsFiles | None = None,
    ) -> None:
        self.provider = provider
        self.tls = tls
        self.cache = SnapshotCache()
        self.registry = NodeRegistry()
        self.controller = Controller(self.cache, options=options, xds_options=xds_options)
        self.xds_address = f"{xds_host}:{xds_port}"
        self.http_host, self.http_port = http_host, http_port
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.controller.update(await self.provider.start())
        credentials = server_credentials(self.tls) if self.tls else None
        self._grpc = build_server(self.cache, self.registry, address=self.xds_address, credentials=credentials)
        await self._grpc.start()
        if self.http_port is not None:
            await self._start_http()
        self._watch = asyncio.create_task(self._watch_provider(), name="provider-watch")
        log.info(
            "serve.started source=%s xds=%s http=%s gateways=%s",
            self.provider.describe(),
            self.xds_address,
            f"{self.http_host}:{self.http_port}" if self.http_port is not None else "off",
            ",".join(self.cache.gateways()) or "(none yet)",
        )

    async def _watch_provider(self) -> None:
        try:
            await self.provider.watch(self.controller.update)
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher dying must be loud, but must not take ADS down
            log.exception("provider.watch_failed source=%s (config is frozen at its last good state)", self.provider.describe())

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", lambda _: web.Response(text="ok\n"))
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", lambda _: web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}))
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        await web.TCPSite(self._http, self.http_host, self.http_port).start()

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.controller.translations == 0:
            return web.Response(status=503, text="not translated yet\n")
        return web.Response(text="ready\n")

    async def stop(self, grace: float = 0.0) -> None:
        """Stop serving. ADS streams never end by themselves, so waiting for them would only delay
        each Envoy's reconnect to another replica: by default they are closed at once (Envoy keeps
        serving its config meanwhile and reconnects after its short retry backoff)."""
        log.info("serve.stopping streams=%d", len(self.registry.streams()))
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._http is not None:
            await self._http.cleanup()

    async def __aenter__(self) -> "ControlPlane":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
