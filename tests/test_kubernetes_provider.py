"""The Kubernetes provider against an API server that misbehaves the way real ones do: restarts,
compaction (410 Gone), and the steady stream of events; the snapshot must follow the cluster
without churn, and a thousand routes must all arrive."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.route.v3 import route_pb2

from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from controlplane.providers import k8s_status
from controlplane.providers import kubernetes as kubernetes_module
from controlplane.providers.jsonshare import Sharer
from controlplane.providers.k8s_status import StatusWriter
from controlplane.providers.kubeapi import ApiError, KubeApi
from controlplane.providers.kubernetes import KubernetesProvider
from controlplane.providers.yamlread import Limits, RejectedError
from controlplane.serve import ControlPlane
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from fakeapi import FakeApiServer
from kube import FAST, GATEWAY, Cluster, cluster, control_plane, endpoint_slice, seed
from support import free_port, wait_until

ROUTE_YAML = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: server}}
spec:
  parentRefs: [{{name: simple-gateway}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs: [{{name: pipy, port: 8080}}]
"""


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        await seed(c)
        yield c


@pytest.fixture
async def plane(c: Cluster) -> AsyncIterator[ControlPlane]:
    plane, _, _ = control_plane(c)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


def kubernetes(plane: ControlPlane) -> KubernetesProvider:
    assert isinstance(plane.provider, KubernetesProvider)
    return plane.provider


def versions(plane: ControlPlane) -> dict[str, str]:
    snapshot = plane.cache.get(GATEWAY)
    assert snapshot is not None
    return snapshot.versions()


def route_names(plane: ControlPlane) -> set[str]:
    snapshot = plane.cache.get(GATEWAY)
    assert snapshot is not None
    names = set()
    for entry in snapshot[ROUTE].entries.values():
        rc = route_pb2.RouteConfiguration.FromString(entry.data)
        names |= {r.match.prefix or r.match.path_separated_prefix for vh in rc.virtual_hosts for r in vh.routes}
    return names


async def test_endpoint_change_changes_endpoints_only(c: Cluster, plane: ControlPlane) -> None:
    before = versions(plane)
    await c.apply(endpoint_slice("pipy", 9001, addresses=("127.0.0.1", "127.0.0.2")))
    await wait_until(lambda: versions(plane)[ENDPOINT] != before[ENDPOINT], message="new endpoint version")
    after = versions(plane)
    assert {t: after[t] for t in (LISTENER, ROUTE, CLUSTER)} == {t: before[t] for t in (LISTENER, ROUTE, CLUSTER)}


async def test_full_resync_gives_the_same_snapshot(c: Cluster, plane: ControlPlane) -> None:
    provider = kubernetes(plane)
    snapshot = plane.cache.get(GATEWAY)
    translations = plane.controller.translations
    await provider.resync()
    # A restarted control plane sees the same cluster the same way: same content, same versions.
    ports = plane.controller.xds_options.port_map
    fresh, fresh_provider, _ = control_plane(c, gateway_port=ports[8000], port_map={8001: ports[8001]})
    fresh.controller.update(await fresh_provider.start())
    await fresh_provider.close()
    assert plane.cache.get(GATEWAY) is snapshot
    assert plane.controller.translations == translations, "a relist of unchanged objects translates nothing"
    assert versions(fresh) == versions(plane)


async def test_the_first_listing_compares_no_content(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing is compared with what the reflector held, on the event loop; at a cold start it
    held nothing, and comparing 10,000 objects' content with nothing took 40 ms (a relist of
    unchanged objects still compares: test_full_resync_gives_the_same_snapshot)."""
    compared: list[object] = []
    same_content = kubernetes_module._same_content

    def counted(obj: Any) -> Any:
        compared.append(obj)
        return same_content(obj)

    monkeypatch.setattr(kubernetes_module, "_same_content", counted)
    _, provider, _ = control_plane(c)
    store = await provider.start()
    await provider.close()
    assert store.httproutes, "the routes are listed"
    assert compared == []


async def test_a_relist_is_compared_in_slices_between_turns_of_the_loop(
    c: Cluster, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relist of unchanged objects is compared with what the reflector held on the event loop
    (Reflector.list): 80 ms in one go at 10,000 objects. It gives the loop back every
    COMPARE_SLICE objects, which a task counting the loop's turns sees between the comparisons."""
    provider = kubernetes(plane)
    held = dict(max(provider.reflectors.values(), key=lambda r: len(r.objects)).objects)
    assert len(held) >= 3, "a kind with several objects"
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    seen: list[int] = []
    same_content = kubernetes_module._same_content

    def counted(obj: Any) -> Any:
        seen.append(turns)
        return same_content(obj)

    monkeypatch.setattr(kubernetes_module, "COMPARE_SLICE", 1)
    monkeypatch.setattr(kubernetes_module, "_same_content", counted)
    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    try:
        assert not await kubernetes_module._differs(held, dict(held))
    finally:
        counter.cancel()
    assert len(seen) == 2 * len(held), "each unchanged object compared (held and listed)"
    assert len(set(seen)) == len(held), "the loop turned between the objects"


async def test_a_status_write_leaves_the_stores_objects_as_they_were(c: Cluster, plane: ControlPlane) -> None:
    """The watch echoes every status write (ours: one per route at a cold start) as an object
    with a new resourceVersion and nothing else new. The store must keep the object it held, or
    the next real change finds every status-written route changed and translates them all again
    (400 ms a change at 10,000 routes, after the cold start's status writes)."""
    provider = kubernetes(plane)
    await c.apply(ROUTE_YAML.format(name="held") + "---\n" + ROUTE_YAML.format(name="edited"))
    await wait_until(lambda: {"/held", "/edited"} <= route_names(plane), message="both routes served")

    def written(name: str, controller: str = DEFAULT_CONTROLLER) -> bool:
        """Whether the watch has delivered a status of ``controller`` on route ``name``."""
        live = provider.live_status("HTTPRoute", "server", name)
        return live is not None and any(p.get("controllerName") == controller for p in live[0].get("parents") or [])

    await wait_until(lambda: written("held") and written("edited"), message="status written, echo seen")
    before = provider.store
    # Another controller writes its status to "held" (over ours: a merge patch replaces the list).
    theirs = {
        "parentRef": {"name": "simple-gateway"},
        "controllerName": "example.com/other",
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    await c.kubectl(
        "patch", "httproute", "held", "-n", "server", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"parents": [theirs]}}),
    )  # fmt: skip
    await wait_until(lambda: written("held", "example.com/other"), message="their status seen through the watch")
    await c.kubectl(
        "patch", "httproute", "edited", "-n", "server", "--type=merge",
        "-p", json.dumps({"spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/edited-v2"}}]}]}}),
    )  # fmt: skip
    await wait_until(lambda: "/edited-v2" in route_names(plane), message="the edit served")
    assert before.changed(provider.store) == {"httproutes": {("server", "edited")}}
    # Ours is written back to "held" over its newest resourceVersion (a stale one: 409 for good).
    await wait_until(lambda: written("held") and written("held", "example.com/other"), message="both statuses")


async def test_one_route_patched_makes_only_its_kinds_mapping_again(c: Cluster, plane: ControlPlane) -> None:
    """A new store per change: indexing every object again took 7-16 ms of the loop per patch at
    10,000 HTTPRoutes. The kinds that did not change hand on the same mapping, which the
    controller's diff skips by identity."""
    provider = kubernetes(plane)
    await c.apply(ROUTE_YAML.format(name="edited"))
    await wait_until(lambda: "/edited" in route_names(plane), message="the route served")
    before = provider.store
    await c.kubectl(
        "patch", "httproute", "edited", "-n", "server", "--type=merge",
        "-p", json.dumps({"spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/edited-v2"}}]}]}}),
    )  # fmt: skip
    await wait_until(lambda: "/edited-v2" in route_names(plane), message="the edit served")
    after = provider.store
    assert before.changed(after) == {"httproutes": {("server", "edited")}}
    assert after.httproutes is not before.httproutes
    made_again = [f.name for f in fields(Store) if getattr(after, f.name) is not getattr(before, f.name)]
    assert made_again == ["httproutes"]
    assert ("server", "simple-gateway") in after.gateways and ("server", "edited") in after.httproutes


async def test_started_again_the_provider_makes_every_kind_again(c: Cluster) -> None:
    """A watch that fails is restarted with ``start`` (the supervisor): new reflectors, which
    count their edits from 0. The store must not keep a kind's mapping from before because the
    count came out the same."""
    _, provider, _ = control_plane(c)
    await provider.start()
    await c.apply(ROUTE_YAML.format(name="while-stopped"))
    try:
        store = await provider.start()
    finally:
        await provider.close()
    assert ("server", "while-stopped") in store.httproutes


async def test_one_route_changed_compares_its_status_only(
    c: Cluster, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status writer compared every status the controller wants with the live one after
    every change, on the event loop: 300 ms and more per change at 10,000 routes. Now only the
    statuses the controller made anew and the live ones that moved."""
    provider = kubernetes(plane)
    names = [f"many-{i}" for i in range(20)]
    await c.apply("---\n".join(ROUTE_YAML.format(name=name) for name in names))

    def generation_written(name: str) -> int:
        """The observedGeneration of our status on route ``name`` as the watch delivered it."""
        live = provider.live_status("HTTPRoute", "server", name)
        ours = [p for p in (live[0].get("parents") or []) if p["controllerName"] == DEFAULT_CONTROLLER] if live else []
        return min((c.get("observedGeneration", 0) for p in ours for c in p["conditions"]), default=0)

    await wait_until(lambda: all(generation_written(name) == 1 for name in names), message="every status written")
    compared: list[tuple[str, str, str]] = []
    patch = StatusWriter._patch

    def counted(self: StatusWriter, key: tuple[str, str, str], *args: Any) -> Any:
        compared.append(key)
        return patch(self, key, *args)

    monkeypatch.setattr(StatusWriter, "_patch", counted)
    await c.kubectl(
        "patch", "httproute", "many-7", "-n", "server", "--type=merge",
        "-p", json.dumps({"spec": {"hostnames": ["many-7.example.com"]}}),
    )  # fmt: skip
    await wait_until(lambda: generation_written("many-7") == 2, message="the new status written")
    assert ("HTTPRoute", "server", "many-7") in compared
    assert len(set(compared)) <= 2, f"compared {len(set(compared))} statuses for one changed route"


async def test_an_echo_before_its_write_answers_is_known_as_ours(
    c: Cluster, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch may bring a status write's echo before the write's own answer. The writer took
    that echo for another writer's change and compared the status again at the next sync (seen
    as a third status compared for one changed route). Here the status writes of route "echoed"
    answer only once their echo has come."""
    provider = kubernetes(plane)
    request, patch = KubeApi.request, StatusWriter._patch
    answered: set[str] = set()  # routes whose status write has answered
    compared_after: list[str] = []  # routes compared after their write answered

    async def echo_first(self: KubeApi, method: str, path: str, **kw: Any) -> dict[str, Any]:
        answer = await request(self, method, path, **kw)
        if method == "PATCH" and path.endswith("/httproutes/echoed/status"):
            rv = answer["metadata"]["resourceVersion"]
            await wait_until(
                lambda: (provider.live_status("HTTPRoute", "server", "echoed") or ({}, ""))[1] == rv,
                message="the write's echo",
            )
            answered.add("echoed")
        return answer

    def counted(self: StatusWriter, key: tuple[str, str, str], *args: Any) -> Any:
        if key[2] in answered:
            compared_after.append(key[2])
        return patch(self, key, *args)

    monkeypatch.setattr(KubeApi, "request", echo_first)
    monkeypatch.setattr(StatusWriter, "_patch", counted)
    await c.apply(ROUTE_YAML.format(name="echoed"))
    await wait_until(lambda: "echoed" in answered, message="the status of echoed written")
    await c.apply(ROUTE_YAML.format(name="other"))  # a change, and so a sync, after it
    await wait_until(
        lambda: (
            (live := provider.live_status("HTTPRoute", "server", "other")) is not None
            and any(p["controllerName"] == DEFAULT_CONTROLLER for p in live[0].get("parents") or [])
        ),
        message="the status of other written",
    )
    assert "echoed" not in compared_after, "our own write's echo was compared as another writer's change"


async def test_status_writes_leave_their_objects_out_of_the_collectors_sight(
    c: Cluster, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patches a sync sends and the live statuses their echoes bring live on; at a cold start
    of 10,000 routes they made the collector's full collections, on the event loop, take 91-108 ms
    in the middle of the writes. The writer freezes them (``gc.freeze``) every ``FREEZE_EVERY``."""
    monkeypatch.setattr(k8s_status, "FREEZE_EVERY", 5)
    provider = kubernetes(plane)
    frozen = gc.get_freeze_count()
    names = [f"frozen-{i}" for i in range(12)]
    await c.apply("---\n".join(ROUTE_YAML.format(name=name) for name in names))

    def written(name: str) -> bool:
        live = provider.live_status("HTTPRoute", "server", name)
        return bool(live and any(p["controllerName"] == DEFAULT_CONTROLLER for p in live[0].get("parents") or []))

    await wait_until(lambda: all(written(name) for name in names), message="every status written")
    assert gc.get_freeze_count() > frozen, "nothing was frozen after 12 status writes"


async def test_api_server_restart_keeps_serving_and_resumes(
    c: Cluster, plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    fake = c.need_fake("restarting the API server")
    provider = kubernetes(plane)
    snapshot = plane.cache.get(GATEWAY)
    caplog.set_level(logging.WARNING, logger="mirrorplane.kubernetes")
    outage = provider.outage
    assert outage is not None  # start() made it
    fake.stop()
    # Every watch notices, retries with backoff, and the outage is logged once.
    await wait_until(lambda: len(outage.failing) == len(provider.reflectors), message="all watches failing")
    await wait_until(lambda: _retries(provider) >= 3, message="several retries")
    assert plane.cache.get(GATEWAY) is snapshot, "the served config stays while the API is gone"
    fake.start()
    await wait_until(lambda: not outage.failing, message="watches back")
    events = [r.message.split()[0] for r in caplog.records]
    assert events.count("kubernetes.unreachable") == 1 and events.count("kubernetes.reachable") == 1
    assert plane.cache.get(GATEWAY) is snapshot, "reconnecting to the same state changes nothing"
    await c.apply(ROUTE_YAML.format(name="after-restart"))
    await wait_until(lambda: "/after-restart" in route_names(plane), message="a change after the restart arrives")


def _retries(provider: KubernetesProvider) -> int:
    return sum(r.retries for r in provider.reflectors.values())


async def test_410_gone_relists_without_churn(
    c: Cluster, plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    fake = c.need_fake("compacting the API server's history")
    caplog.set_level(logging.INFO, logger="mirrorplane.kubernetes")
    provider = kubernetes(plane)
    snapshot = plane.cache.get(GATEWAY)
    translations = plane.controller.translations
    relists = {k: r.relists for k, r in provider.reflectors.items()}
    # While the watches are cut, something unwatched changes and history is compacted past it:
    # every watch resumes from a resourceVersion that is gone.
    fake.stop()
    fake.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated", "namespace": "server"}})
    fake.compact()
    fake.start()
    await wait_until(
        lambda: all(r.relists > relists[k] for k, r in provider.reflectors.items()),
        message="every kind relisted after 410 Gone",
    )
    expired = [r.message for r in caplog.records if r.message.startswith("watch.expired")]
    assert len(expired) >= len(provider.reflectors), "each watch was told 410 Gone"
    assert plane.cache.get(GATEWAY) is snapshot
    assert plane.controller.translations == translations
    # Objects changed during the gap arrive through the relist.
    fake.stop()
    fake.apply(_route_obj("during-gap"))
    fake.compact()
    fake.start()
    await wait_until(lambda: "/during-gap" in route_names(plane), message="the relist brings the change")


def _route_obj(name: str) -> dict:
    return yaml.safe_load(ROUTE_YAML.format(name=name))


async def test_burst_of_changes_is_one_translation(c: Cluster) -> None:
    """Events within the debounce window of the first become one translation. The window is 5 ms
    in production; 2 s here, so that a slow machine cannot split a burst written in microseconds."""
    fake = c.need_fake("writing 50 objects at once")
    plane, _, _ = control_plane(c, options=replace(FAST, debounce=2.0))
    burst = {f"/burst-{i}" for i in range(50)}
    served: list[int] = []  # burst routes in Envoy's config after each translation
    plane.controller.update_listeners.append(lambda *_: served.append(len(route_names(plane) & burst)))
    await plane.start()
    try:
        await wait_until(lambda: plane.cache.get(GATEWAY) is not None, message="the first translation")
        served.clear()
        for i in range(50):
            fake.create(_route_obj(f"burst-{i}"))
        await wait_until(lambda: bool(served), timeout=30, message="a translation after the burst")
        assert served[0] == 50, f"the burst was split: {served}"
    finally:
        await plane.stop()


async def test_only_referenced_secrets_are_kept(c: Cluster, plane: ControlPlane) -> None:
    for name in ("referenced", "unrelated"):
        await c.apply(
            f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: server}}
type: kubernetes.io/tls
data: {{tls.crt: "", tls.key: ""}}
"""
        )
    provider = kubernetes(plane)
    await wait_until(lambda: len(provider.reflectors["Secret"].objects) >= 2, message="secrets seen")
    gw = await c.get("gateway", "simple-gateway", "server")
    listeners = gw["spec"]["listeners"] + [
        {
            "name": "https",
            "port": 8443,
            "protocol": "HTTPS",
            "tls": {"mode": "Terminate", "certificateRefs": [{"name": "referenced"}]},
            "allowedRoutes": {"namespaces": {"from": "Same"}},
        }
    ]
    await c.kubectl(
        "patch",
        "gateway",
        "simple-gateway",
        "-n",
        "server",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"listeners": listeners}}),
    )
    await wait_until(
        lambda: ("server", "referenced") in provider.store.secrets, message="the referenced Secret in the store"
    )
    assert ("server", "unrelated") not in provider.store.secrets


async def test_a_thousand_routes_sync(c: Cluster) -> None:
    fake = c.need_fake("creating 1,000 routes quickly")
    for i in range(1000):
        fake.create(_route_obj(f"r{i}"))
    plane, _, _ = control_plane(c)
    await plane.start()
    try:
        assert len(kubernetes(plane).store.httproutes) == 1001
        names = route_names(plane)
        assert {f"/r{i}" for i in range(1000)} <= names
    finally:
        await plane.stop()


async def test_watch_timeouts_reopen_from_the_last_resource_version(c: Cluster) -> None:
    fake = c.need_fake("reading the request log")
    plane, provider, _ = control_plane(c, options=replace(FAST, timeout_seconds=(1, 1)))
    await plane.start()
    try:
        path = provider.resource("HTTPRoute").path()

        def watches() -> list:
            return [r for r in fake.requests(method="GET", path=path) if r.is_watch]

        await wait_until(lambda: len(watches()) >= 3, message="the server ended the watch twice (timeoutSeconds=1)")
        assert all(r.query["timeoutSeconds"] == "1" and r.query["resourceVersion"] for r in watches())
        assert all(r.relists == 1 for r in provider.reflectors.values()), "a timeout is not a reason to relist"
        await c.apply(ROUTE_YAML.format(name="after-timeouts"))
        await wait_until(lambda: "/after-timeouts" in route_names(plane), message="changes keep arriving")
    finally:
        await plane.stop()


async def test_start_retries_a_500_on_the_first_list_and_an_unreachable_api(
    c: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """main: `serve --kubernetes` exited at once. Now: not ready, retried with backoff, the
    failing resource named in the log; ready once every kind is listed."""
    import asyncio

    from grpc_health.v1 import health_pb2

    fake = c.need_fake("failing the API server's answers")
    caplog.set_level(logging.WARNING, logger="mirrorplane.kubernetes")
    fake.fail("/apis/gateway.networking.k8s.io/v1/httproutes", times=3)
    fake.stop()  # unreachable first
    plane, provider, _ = control_plane(c)
    starting = asyncio.create_task(plane.start())
    try:
        await wait_until(
            lambda: any("kubernetes.start_failed" in r.getMessage() for r in caplog.records),
            message="a failed start logged",
        )
        assert not starting.done() and not plane.ready()
        assert plane.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
        fake.start()
        await asyncio.wait_for(starting, 30)
        failures = [r.getMessage() for r in caplog.records if "kubernetes.start_failed" in r.getMessage()]
        assert any("resource=httproutes" in m and "HTTP 500" in m for m in failures), failures
        assert fake.failures["/apis/gateway.networking.k8s.io/v1/httproutes"] == 0
        assert plane.ready() and plane.cache.get(GATEWAY) is not None
    finally:
        if not starting.done():
            starting.cancel()
        await plane.stop()


async def test_an_object_over_the_limits_is_skipped_and_named(
    c: Cluster, plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """The file provider's limits hold for objects from the API too (here: a Service nested 200
    deep in a field the API server does not prune)."""
    fake = c.need_fake("storing an object a real API server may refuse")
    caplog.set_level(logging.ERROR, logger="mirrorplane.kubernetes")
    deep: dict[str, object] = {}
    for _ in range(200):
        deep = {"x": deep}
    fake.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "deep", "namespace": "server"},
            "spec": {"ports": [{"port": 80}], "extra": deep},
        }
    )
    await wait_until(
        lambda: any("object.rejected" in r.getMessage() and "server/deep" in r.getMessage() for r in caplog.records),
        message="the deep Service rejected",
    )
    assert ("server", "deep") not in kubernetes(plane).store.services
    await c.apply(ROUTE_YAML.format(name="after-deep"))
    await wait_until(lambda: "/after-deep" in route_names(plane), message="later changes still arrive")


async def test_the_api_client_reads_no_netrc_and_keeps_the_environments_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client no longer looks up ~/.netrc and the environment's proxy on every request (two
    worker-thread hops each: 10,000 status writes at a cold start). Looking netrc up did harm: an
    entry for the API's host made every request fail, its basic auth clashing with the bearer
    token. A proxy the environment names for the API's host is still used (then the session is
    left as kubernetes-asyncio makes it)."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with FakeApiServer() as fake:
        kubeconfig = Path(fake.write_kubeconfig(tmp_path / "kubeconfig"))
        api = await KubeApi.connect(kubeconfig)
        try:
            assert "httproutes" in await api.served_resources("gateway.networking.k8s.io/v1")
            assert all(r.status == 200 for r in fake.requests())
        finally:
            await api.close()
        # With a proxy for the API's host in the environment, the session looks both up as before.
        monkeypatch.delenv("NETRC")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        api = await KubeApi.connect(kubeconfig)
        try:
            with pytest.raises(ApiError, match="cannot reach"):
                await api.request("GET", "/api/v1/namespaces")
        finally:
            await api.close()


_WITHOUT_MODELS = """
import asyncio, json, sys
from pathlib import Path
from controlplane.providers.kubeapi import KubeApi
from kubernetes_asyncio.client.configuration import Configuration
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

async def main() -> list[str]:
    api = await KubeApi.connect(Path(sys.argv[1]))
    try:
        return sorted(await api.served_resources("gateway.networking.k8s.io/v1"))
    finally:
        await api.close()

served = asyncio.run(main())
cfg = Configuration()
InClusterConfigLoader(sys.argv[2], sys.argv[3], environ={
    "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}).load_and_set(cfg)
generated = [m for m in sys.modules if m.startswith(("kubernetes_asyncio.client.models.", "kubernetes_asyncio.client.api."))]
print(json.dumps({"served": served, "in_cluster": [cfg.host, cfg.api_key], "generated": generated}))
"""


def test_the_provider_imports_none_of_the_generated_models(tmp_path: Path) -> None:
    """kubernetes-asyncio's ``client`` package imports ~900 generated models and ~70 API classes
    (38 MB of RSS, 0.5 s) the provider never uses; kubelib defers them. Loading a kubeconfig,
    requests against the API server and the in-cluster loader must work without them."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("in-cluster-token")
    ca.write_text("not read until TLS is set up")
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(
            [sys.executable, "-c", _WITHOUT_MODELS, kubeconfig, str(token), str(ca)],
            capture_output=True,
            text=True,
            check=True,
        )
    got = json.loads(out.stdout)
    assert "httproutes" in got["served"]
    assert got["in_cluster"] == ["https://10.0.0.1:443", {"BearerToken": "Bearer in-cluster-token"}]
    assert got["generated"] == []


_SERVE_KUBERNETES_IMPORTS = """
import asyncio, json, sys
from controlplane import cli

args = cli.build_parser().parse_args(["serve", "--kubernetes", "--kubeconfig", sys.argv[1], "--no-leader-election"])
provider, extensions = cli._source(args)

async def main() -> int:
    try:
        return len(list((await provider.start()).objects()))
    finally:
        await provider.close()

listed = asyncio.run(main())
unused = ("kubernetes_asyncio.dynamic", "kubernetes_validate", "jsonschema", "cel", "watchfiles",
          "controlplane.gatewayapi.schema", "controlplane.providers.files")
print(json.dumps({"listed": listed, "imported": [m for m in unused if m in sys.modules]}))
"""


def test_serve_kubernetes_imports_neither_the_files_validation_nor_the_clients_dynamic_package(
    tmp_path: Path,
) -> None:
    """``serve --kubernetes`` lists from an API server that has validated everything: the files
    provider's schemas, CEL library and watcher, and kubernetes-asyncio's ``dynamic`` package
    (kubernetes-validate, jsonschema) are ~9 MB of its RSS it never uses. A ``from
    kubernetes_asyncio import config`` once ran the package's whole ``__init__`` for them."""
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(
            [sys.executable, "-c", _SERVE_KUBERNETES_IMPORTS, kubeconfig], capture_output=True, text=True, check=True
        )
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["listed"] >= 1  # it did list (the fake serves namespaces)
    assert got["imported"] == []


def test_the_whole_kubernetes_client_is_still_there_for_whoever_asks() -> None:
    """After kubelib, ``from kubernetes_asyncio import client`` still gives the API classes and
    models (the test suite's fake cluster uses them): the first lookup runs the real __init__."""
    code = (
        "import sys, controlplane.providers.kubeapi\n"
        "from kubernetes_asyncio import client, watch\n"
        "print(client.CoreV1Api.__module__, client.V1Pod.__module__, client.models.V1Pod is client.V1Pod,"
        " watch.Watch.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "kubernetes_asyncio.client.api.core_v1_api",
        "kubernetes_asyncio.client.models.v1_pod",
        "True",
        "Watch",
    ]


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        # {"a": ["xyz", 1], "b": {"c": None}}: 9 nodes (the keys too), 3 + 8 + 1 + 1 + 1 + 8 = 22
        # characters (a non-string scalar counts 8), nested 2 levels.
        (Limits(max_nodes=9, max_bytes=22, max_depth=2), None),
        (Limits(max_nodes=8, max_bytes=22, max_depth=2), "larger than 8 nodes"),
        (Limits(max_nodes=9, max_bytes=21, max_depth=2), "or 21 bytes"),
        (Limits(max_nodes=9, max_bytes=22, max_depth=1), "nested deeper than 1 levels"),
    ],
)
def test_an_api_object_is_held_to_the_limits_of_a_file(limits: Limits, refused: str | None) -> None:
    """What the reflector's walk (``Sharer.share``) counts, exactly at and one past each limit.
    (``yamlread.check_tree``, the walk it replaced, checked the characters only when it reached a
    dict or list: the strings of the last ones it reached were never checked, so a Service with
    one 9 MB annotation passed.)"""
    body = {"a": ["xyz", 1], "b": {"c": None}}
    if refused is None:
        Sharer(limits).share(body)
    else:
        with pytest.raises(RejectedError, match=refused):
            Sharer(limits).share(body)
