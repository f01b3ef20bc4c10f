"""One test's world: a folder served by the file provider, control planes and real Envoys.

Upstream applies each test's manifests to a shared cluster and runs tests one by one. Here every
test gets its own folder (base manifests + the run's generated objects + the test's YAML), so
tests can run side by side. A Gateway's Envoy starts the first time a test sends it traffic;
each Gateway gets its own ControlPlane, whose XdsOptions.port_map sends that Gateway's listener
ports to free local ports (Gateways in the fixture share port numbers, e.g. 80). A separate
ControlPlane with no Envoy is the "API server" that status is read from.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from controlplane.gatewayapi.model import K8sObject
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER, Options
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions

from . import fixture, rpc
from .http import Case, Client, Target, expect_consistent
from .rpc import GrpcCase, GrpcClient
from .pods import Pods
from .status import (
    Cond,
    ConformanceError,
    ListenerExpectation,
    Parent,
    accepted,
    conditions_match,
    eventually,
    listeners_match,
    parents_match,
    stale,
)

INFRA = "gateway-conformance-infra"
SAME_NAMESPACE = (INFRA, "same-namespace")


@dataclass
class _GatewayRuntime:
    plane: ControlPlane
    envoy: LocalEnvoy
    ports: dict[int, int]


class Env:
    """What a test function receives: status reads, manifest edits, traffic."""

    def __init__(self, folder: Path, pods: Pods, certs: dict[tuple[str, str], fixture.Certificate], base: str) -> None:
        self.folder = folder
        self.pods = pods
        self.certs = certs
        self._base = base
        self.controller = DEFAULT_CONTROLLER
        self.client = Client()
        self.grpc = GrpcClient()
        self._status_plane: ControlPlane | None = None
        self._gateways: dict[tuple[str, str], _GatewayRuntime] = {}
        self._lock = asyncio.Lock()
        self.envoy_logs: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, manifests: list[str]) -> None:
        self.folder.mkdir(parents=True)
        (self.folder / "00-base.yaml").write_text(self._base)
        docs = []
        for i, rel in enumerate(manifests):
            text = fixture.render((fixture.UPSTREAM / rel).read_text())
            (self.folder / f"10-test-{i}.yaml").write_text(text)
            docs += [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        specs = [p.spec for p in self.pods.pods]
        slices = fixture.endpoint_slices(docs, specs, {s.name for s in specs})
        if slices:  # what the EndpointSlice controller adds for the test's own Services
            (self.folder / "05-test-endpointslices.yaml").write_text(fixture.dump(slices))
        self._status_plane = self._plane(XdsOptions(bind_address="127.0.0.1"))
        await self._status_plane.start()

    def _plane(self, xds: XdsOptions) -> ControlPlane:
        return ControlPlane(
            FileProvider(self.folder),
            xds_host="127.0.0.1",
            xds_port=free_port(),
            http_port=None,
            options=Options(),
            xds_options=xds,
        )

    async def stop(self) -> None:
        await self.client.close()
        await self.grpc.close()
        for rt in self._gateways.values():
            await rt.envoy.stop()
            await rt.plane.stop(grace=0)
        if self._status_plane is not None:
            await self._status_plane.stop(grace=0)

    # -- objects ---------------------------------------------------------------------------------

    def write(self, name: str, docs: list[dict[str, Any]] | str) -> None:
        """Create or replace a manifest file (atomically, like kubectl apply)."""
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs, sort_keys=False)
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.folder / name)

    def delete(self, name: str) -> None:
        (self.folder / name).unlink()

    def test_docs(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted(self.folder.glob("10-test-*.yaml")):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        return docs

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert self._status_plane is not None
        return self._status_plane.controller.statuses.get((kind, namespace, name))

    def _status_store(self) -> Store:
        assert self._status_plane is not None
        provider = self._status_plane.provider
        assert isinstance(provider, FileProvider)  # the harness serves a folder
        return provider.store()

    def generation(self, kind: str, namespace: str, name: str) -> int | None:
        store = self._status_store()
        obj: K8sObject[Any] | None
        if kind == "GatewayClass":
            obj = store.gatewayclasses.get(name)
        else:
            by_kind: dict[str, Mapping[tuple[str, str], K8sObject[Any]]] = {
                "HTTPRoute": store.httproutes, "GRPCRoute": store.grpcroutes, "Gateway": store.gateways
            }
            obj = by_kind[kind].get((namespace, name))
        return obj.generation if obj is not None else None

    # -- status assertions -----------------------------------------------------------------------

    def _gateway_ready(self, gw: tuple[str, str]) -> str:
        status, gen = self.status("Gateway", *gw), self.generation("Gateway", *gw)
        if status is None or gen is None:
            return f"Gateway {gw[0]}/{gw[1]} has no status"
        return stale(gen, status.get("conditions") or []) or (
            "" if any(a.get("type") and a.get("value") for a in status.get("addresses") or []) else "no typed address"
        )

    async def gateway_and_routes_accepted(
        self, gw: tuple[str, str], routes: list[tuple[str, str]], *listeners: str, kind: str = "HTTPRoute"
    ) -> Target:
        """upstream's GatewayAndHTTPRoutesMustBeAccepted(NewGatewayRef(gw, listeners...)): one
        accepted parent per listener name (one without sectionName when none is given); returns
        where to send traffic (the first named listener's port)."""
        await eventually(lambda: self._gateway_ready(gw), f"Gateway {gw[0]}/{gw[1]} address")
        expected = [Parent(gw[0], gw[1], (accepted("True", "Accepted"),), name) for name in listeners or (None,)]
        for ns, name in routes:
            await self.route_must_have_parents((ns, name), expected, filter_gateway=gw, kind=kind)
        required = [Cond("ResolvedRefs", "True"), Cond("Accepted", "True"), Cond("Programmed", "True")]

        def listeners_ready() -> str:
            gen = self.generation("Gateway", *gw) or 0
            for lst in (self.status("Gateway", *gw) or {}).get("listeners") or []:
                why = stale(gen, lst.get("conditions") or []) or conditions_match(required, lst.get("conditions") or [])
                if why:
                    return f"listener {lst['name']}: {why}"
            return ""

        await eventually(listeners_ready, f"Gateway {gw[0]}/{gw[1]} listeners ready")
        return await self.target(gw, listeners[0] if listeners else None)

    async def route_must_have_parents(
        self, route: tuple[str, str], parents: list[Parent], filter_gateway: tuple[str, str] | None = None, kind: str = "HTTPRoute"
    ) -> None:
        def check() -> str:
            status, gen = self.status(kind, *route), self.generation(kind, *route)
            if gen is None:
                return "route not found"
            actual = (status or {}).get("parents") or []
            if filter_gateway is not None:
                actual = [
                    p
                    for p in actual
                    if p["parentRef"]["name"] == filter_gateway[1]
                    and (p["parentRef"].get("namespace") or route[0]) == filter_gateway[0]
                ]
            return parents_match(parents, actual, route[0], self.controller, gen)

        await eventually(check, f"{kind} {route[0]}/{route[1]} parents")

    async def route_condition(self, route: tuple[str, str], gw: tuple[str, str], cond: Cond, kind: str = "HTTPRoute") -> None:
        """upstream's HTTPRouteMustHaveCondition (HTTPRouteMustHaveResolvedRefsConditionsTrue)."""

        def check() -> str:
            status, gen = self.status(kind, *route), self.generation(kind, *route)
            found = False
            for p in (status or {}).get("parents") or []:
                why = stale(gen or 0, p.get("conditions") or [])
                if why:
                    return why
                ref = p["parentRef"]
                if ref["name"] == gw[1] and (ref.get("namespace") or route[0]) == gw[0]:
                    found = found or not conditions_match([cond], p.get("conditions") or [])
            return "" if found else f"no parent {gw[1]} with {cond}"

        await eventually(check, f"{kind} {route[0]}/{route[1]} condition {cond.type}")

    async def resolved_refs_true(self, route: tuple[str, str], gw: tuple[str, str], kind: str = "HTTPRoute") -> None:
        await self.route_condition(route, gw, Cond("ResolvedRefs", "True", "ResolvedRefs"), kind)

    async def gateway_listeners(self, gw: tuple[str, str], expected: list[ListenerExpectation]) -> None:
        """upstream's GatewayStatusMustHaveListeners."""

        def check() -> str:
            status, gen = self.status("Gateway", *gw), self.generation("Gateway", *gw)
            if status is None or gen is None:
                return "no Gateway status"
            return stale(gen, status.get("conditions") or []) or listeners_match(expected, status.get("listeners") or [])

        await eventually(check, f"Gateway {gw[0]}/{gw[1]} listeners")

    async def latest_conditions(self, kind: str, namespace: str, name: str, *conds: Cond) -> None:
        """Every condition of the object at its current generation, and ``conds`` among them
        (upstream's GatewayMustHaveLatestConditions / GWCMustBeAccepted)."""

        def check() -> str:
            status, gen = self.status(kind, namespace, name), self.generation(kind, namespace, name)
            if status is None or gen is None:
                return f"no {kind} status"
            return stale(gen, status.get("conditions") or []) or conditions_match(list(conds), status.get("conditions") or [])

        await eventually(check, f"{kind} {namespace + '/' if namespace else ''}{name} conditions")

    async def generation_bumped(self, kind: str, namespace: str, name: str, before: int | None) -> None:
        await eventually(
            lambda: "" if self.generation(kind, namespace, name) not in (before, None) else "generation unchanged",
            f"{kind} {name} generation bump",
        )

    async def gateway_zero_routes(self, gw: tuple[str, str]) -> None:
        """upstream's GatewayMustHaveZeroRoutes: no listener status, or exactly one with 0 routes."""

        def check() -> str:
            status, gen = self.status("Gateway", *gw), self.generation("Gateway", *gw)
            if status is None or gen is None:
                return "no Gateway status"
            listeners = status.get("listeners") or []
            ok = not listeners or (len(listeners) == 1 and listeners[0].get("attachedRoutes") == 0)
            return stale(gen, status.get("conditions") or []) or ("" if ok else f"listeners {listeners}")

        await eventually(check, f"Gateway {gw[0]}/{gw[1]} has zero routes")

    # -- traffic ---------------------------------------------------------------------------------

    async def target(self, gw: tuple[str, str], listener: str | None = None) -> Target:
        """The Gateway's address and the port of its first (or the named) listener, Envoy running."""
        store = self._status_store()
        spec = store.gateways[gw].spec
        listeners = spec["listeners"]
        chosen = next((lst for lst in listeners if lst["name"] == listener), listeners[0])
        runtime = await self._gateway(gw, sorted({lst["port"] for lst in listeners}))
        addresses = (self.status("Gateway", *gw) or {}).get("addresses") or [{"value": "127.0.0.1"}]
        https = chosen["protocol"] == "HTTPS"
        ca = None
        if https:
            ref = chosen["tls"]["certificateRefs"][0]
            ca = self.certs[(ref.get("namespace") or gw[0], ref["name"])].cert_pem
        return Target(addresses[0]["value"], chosen["port"], runtime.ports[chosen["port"]], "https" if https else "http", ca)

    async def _gateway(self, gw: tuple[str, str], ports: list[int]) -> _GatewayRuntime:
        async with self._lock:
            if gw in self._gateways:
                return self._gateways[gw]
            port_map = {p: free_port() for p in ports}
            plane = self._plane(XdsOptions(bind_address="127.0.0.1", port_map=MappingProxyType(port_map)))
            await plane.start()
            envoy = LocalEnvoy(
                node_id=f"conformance-{self.folder.name}-{gw[1]}",
                gateway=f"{gw[0]}/{gw[1]}",
                xds_port=int(plane.xds_address.rsplit(":", 1)[1]),
                admin_port=0,
                log_sink=self.envoy_logs.append,
                log_level="error",
            )
            try:
                await envoy.start()
            except BaseException:
                await plane.stop(grace=0)
                raise
            self._gateways[gw] = _GatewayRuntime(plane, envoy, port_map)
            return self._gateways[gw]

    async def distribution(self, target: Target, case: Case, total: int, concurrency: int = 10) -> collections.Counter[str]:
        """Send ``total`` requests (``concurrency`` at a time); count the answering backends by
        Deployment (the pod name without its two generated suffixes)."""
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with semaphore:
                got = await self.client.capture(target, case)
            if got.status != 200 or got.body is None:
                return f"status {got.status}"
            return str(got.body.get("pod", "")).rsplit("-", 2)[0]

        return collections.Counter(await asyncio.gather(*(one() for _ in range(total))))

    async def grpc_distribution(self, target: Target, case: GrpcCase, total: int, concurrency: int = 10) -> collections.Counter[str]:
        """As :meth:`distribution`, with gRPC calls (each with unique metadata, as upstream's)."""
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with semaphore:
                got = await self.grpc.call(target, case, (("x-request-index", str(i)),))
            if got.response is None:
                return f"status {got.code.name}"
            return got.response.assertions.context.pod.rsplit("-", 2)[0]

        return collections.Counter(await asyncio.gather(*(one(i) for i in range(total))))

    async def expect(self, target: Target, *cases: Case | GrpcCase) -> None:
        """Every case eventually consistent (they run in parallel, as upstream's t.Parallel)."""
        results = await asyncio.gather(
            *(
                rpc.expect_consistent(self.grpc, target, c) if isinstance(c, GrpcCase) else expect_consistent(self.client, target, c)
                for c in cases
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            if not all(isinstance(f, ConformanceError) for f in failures):
                raise next(f for f in failures if not isinstance(f, ConformanceError))
            raise ConformanceError("; ".join(str(f) for f in failures[:3]) + (f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""))


def edit_docs(env: Env, kind: str, namespace: str, name: str, mutate: Any) -> None:
    """Change one object of the test's manifests the way the API server would: ``mutate(doc)``
    returns the new object (None deletes it); a spec change bumps metadata.generation."""
    for path in sorted(env.folder.glob("10-test-*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        kept, hit = [], False
        for doc in docs:
            meta = doc.get("metadata") or {}
            if doc.get("kind") == kind and meta.get("name") == name and meta.get("namespace", "") == namespace:
                hit = True
                before = yaml.safe_dump(doc.get("spec"))
                new = mutate(yaml.safe_load(yaml.safe_dump(doc)))
                if new is None:
                    continue
                if yaml.safe_dump(new.get("spec")) != before:
                    new["metadata"]["generation"] = int(meta.get("generation") or 1) + 1
                doc = new
            kept.append(doc)
        if hit:
            env.write(path.name, kept)
            return
    raise ConformanceError(f"{kind} {namespace}/{name} is not in the test's manifests")
