"""The running control plane: provider → controller → snapshot cache → ADS server.

One object owns the lifecycle so that the CLI, local mode and the end-to-end tests start
exactly the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2

from .admin.service import admin_services
from .controller import Controller
from .errors import BindError, UsageError
from .exposure import exposure_error, host_port, is_loopback
from .gatewayapi.store import Store
from .gatewayapi.translator import Options
from .gcpause import map_large_blocks
from .identity import Authorizer
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .providers.base import Provider
from .providers.supervisor import Supervisor
from .quarantine import Quarantine
from .shadow.bodyreport import BODIES_SERVICE_NAME, BodyReceiver, bodies_service
from .shadow.hub import Comparisons
from .shadow.receiver import ALS_SERVICE_NAME, AccessLogReceiver, als_service
from .shadow.service import expire_forever, shadow_service
from .tls import TlsFiles, server_credentials
from .web.app import WebPage
from .web.model import Sources
from .xds.cache import SnapshotCache
from .xds.server import build_server
from .xds.tracking import NodeRegistry
from .xds.translator import XdsOptions

log = logging.getLogger("mirrorplane.serve")


class Extension(Protocol):
    """Something that runs beside serving, e.g. the Kubernetes status writer and its Lease."""

    async def start(self, plane: ControlPlane) -> None: ...

    async def stop(self) -> None: ...


class ControlPlane:
    """Serve the objects of a provider (a folder, a cluster) over ADS until stopped.

    Safe by default: both ports bind loopback; a non-loopback xDS address needs mutual TLS
    (``insecure`` overrides that), and with mutual TLS client identities are enforced
    (:mod:`.identity`). docs/security.md has the rules.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        xds_host: str = "127.0.0.1",
        xds_port: int = 18000,
        http_host: str = "127.0.0.1",
        http_port: int | None = 19001,
        options: Options = Options(),
        xds_options: XdsOptions = XdsOptions(),
        tls: TlsFiles | None = None,
        insecure: bool = False,
        extensions: Sequence[Extension] = (),
    ) -> None:
        problem = exposure_error(xds_host, tls, insecure)
        if problem:
            raise UsageError(problem)
        self.provider = provider
        self.extensions = list(extensions)
        self.tls = tls
        self.authorizer = Authorizer(enforced=tls is not None and tls.mutual)
        self.cache = SnapshotCache()
        self.registry = NodeRegistry()
        self.controller = Controller(self.cache, options=options, xds_options=xds_options)
        # A NACK never freezes a Gateway: the HTTPRoutes Envoy rejected are left out and reported.
        self.quarantine = Quarantine(self.controller, self.registry, refresh=self._schedule_refresh)
        self._update_lock = asyncio.Lock()  # one update at a time: prepare() runs in a worker thread
        self._refreshes: set[asyncio.Task[None]] = set()
        # Unauthenticated, /metrics shows Envoy's NACK messages (they can quote config) only on loopback.
        self.metrics = Metrics(
            self.registry,
            self.cache,
            mirror_body_limit=xds_options.mirror_body_limit,
            nack_messages=insecure or is_loopback(http_host),
        )
        self.controller.update_listeners.append(self.metrics.on_update)
        # Shadow testing: Envoys' access logs come to the xDS port (docs/shadow-testing.md).
        self.comparisons = Comparisons()
        self.controller.tag_listeners.append(self.comparisons.set_tags)
        self.als = AccessLogReceiver(self.comparisons, self.authorizer)
        self.bodies = BodyReceiver(self.comparisons.add_bodies, self.comparisons.count, self.authorizer)
        self.xds_address = host_port(xds_host, xds_port)
        self.http_host, self.http_port = http_host, http_port
        # The page shows config: served to loopback only, unless --insecure (controlplane/web/access.py).
        self.web = WebPage(
            Sources(
                gateways=lambda: self.controller.gateways,
                statuses=lambda: self.controller.statuses,
                store=lambda: self.controller.last_input,
                registry=self.registry,
                comparisons=self.comparisons,
            ),
            translations=lambda: self.controller.translations,
            open_to_all=insecure,
        )
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self._expire: asyncio.Task[None] | None = None
        # Ready: translated once, and the provider is running (gRPC health says the same).
        self.health = health.aio.HealthServicer()
        self.supervisor = Supervisor(provider, self._on_provider_change, self._on_provider_up)
        self.provider_up = False

    async def start(self) -> None:
        """Serve (not ready yet), then load the provider's objects: health answers while a large
        folder loads or an unreachable cluster is retried."""
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        map_large_blocks()
        credentials = server_credentials(self.tls) if self.tls else None
        self._grpc = build_server(
            self.cache,
            self.registry,
            address=self.xds_address,
            credentials=credentials,
            authorizer=self.authorizer,
            services=[
                *admin_services(self.cache, self.registry, lambda: self.controller.statuses),
                als_service(self.als),
                bodies_service(self.bodies),
                shadow_service(self.comparisons),
            ],
            self_checked=[ALS_SERVICE_NAME, BODIES_SERVICE_NAME],
            health_servicer=self.health,
        )
        await self._grpc.start()
        if self.http_port is not None:
            await self._start_http(self.http_port)
            await self.web.start()
        self._expire = asyncio.create_task(expire_forever(self.comparisons), name="shadow-expire")
        try:
            await self._update(await self.provider.start())
        except BaseException:
            await self.stop()
            raise
        await self._on_provider_up(True)
        self._watch = asyncio.create_task(self.supervisor.run(), name="provider-watch")
        for ext in self.extensions:
            await ext.start(self)
        log.info(
            "serve.started source=%s xds=%s xds_security=%s http=%s page=%s gateways=%s mirror_body_limit=%d",
            self.provider.describe(),
            self.xds_address,
            self._security(),
            host_port(self.http_host, self.http_port) if self.http_port is not None else "off",
            self.page_url or "off",
            ",".join(self.cache.gateways()) or "(none yet)",
            self.controller.xds_options.mirror_body_limit,
        )

    @property
    def page_url(self) -> str | None:
        """Where a browser on this machine opens the page (docs/web.md), or None without an HTTP port."""
        if self.http_port is None:
            return None
        host = self.http_host.strip("[]")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        return f"http://{host_port(host, self.http_port)}/"

    def _security(self) -> str:
        if self.authorizer.enforced:
            return "mtls-identities"
        return "tls" if self.tls else "plaintext"

    async def _on_provider_up(self, up: bool) -> None:
        self.provider_up = up
        status = health_pb2.HealthCheckResponse.SERVING if self.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)

    def ready(self) -> bool:
        return self.provider_up and self.controller.translations > 0

    async def _on_provider_change(self, store: Store) -> None:
        self.metrics.on_provider_event()
        await self._update(store)

    async def _update(self, store: Store | None = None) -> None:
        """Translate ``store`` (None: the provider's last store again) and serve the result.

        Translating and serializing 10,000 routes takes longer than the event loop may stall
        (ADS streams, health checks, the admin API): it runs in a worker thread, and only
        installing the snapshots happens on the loop. Updates never overlap.
        """
        async with self._update_lock:
            store = store if store is not None else self.controller.last_input
            if store is not None:
                self.controller.apply(await asyncio.to_thread(self.controller.prepare, store))
                for stream in self.registry.streams():  # what the status writer gives way to
                    snapshot = self.cache.get(stream.gateway)
                    if snapshot is not None and snapshot.version != stream.snapshot_version:
                        self.registry.snapshot_due(stream)

    def _schedule_refresh(self) -> None:
        """Translate the newest input again (the quarantine changed), after any update in flight."""
        task = asyncio.get_running_loop().create_task(self._update())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _start_http(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self.web.add_routes(app)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        try:
            await web.TCPSite(self._http, self.http_host, port).start()
        except OSError as exc:
            where = host_port(self.http_host, port)
            raise BindError(f"cannot listen on {where} (HTTP): {exc.strerror or exc}") from exc

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render() + self.comparisons.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.controller.translations == 0:
            return web.Response(status=503, text="not translated yet\n")
        if not self.provider_up:
            return web.Response(status=503, text=f"provider down: {self.provider.describe()} (restarting)\n")
        return web.Response(text="ready\n")

    async def stop(self, grace: float = 0.0) -> None:
        """Stop serving. ADS streams never end by themselves, so waiting for them would only delay
        each Envoy's reconnect to another replica: by default they are closed at once (Envoy keeps
        serving its config meanwhile and reconnects after its short retry backoff)."""
        log.info("serve.stopping streams=%d", len(self.registry.streams()))
        for ext in reversed(self.extensions):
            await ext.stop()
        for task in (self._watch, self._expire):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._grpc is not None:
            await self._grpc.stop(grace)
        await self.web.stop()
        if self._http is not None:
            await self._http.cleanup()

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
