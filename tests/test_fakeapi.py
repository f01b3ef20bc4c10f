"""The fake API server behaves like kube-apiserver where mirrorplane and kubectl depend on it.

Contract tests go through kubernetes-asyncio (the provider's client) and run
against a real cluster too when MIRRORPLANE_TEST_KUBECONFIG is set; the tests
of the fake's own controls (compaction, restart, request log, discovery
documents) use plain aiohttp and skip there, saying why.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch

from fakeapi import FakeApiServer
from fakeapi.cluster import Cluster, open_cluster
from fakeapi.kubectl import KubectlWatch, kubectl_async, kubectl_binary
from support import wait_until

GROUP, VERSION = "gateway.networking.k8s.io", "v1"
MERGE = "application/merge-patch+json"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with open_cluster(tmp_path) as c:
        yield c


def route(name: str, labels: dict[str, str] | None = None, port: int = 8080, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "pipy", "port": port}]}]},
        **extra,
    }


class Routes:
    """HTTPRoute calls in the test's namespace, as the provider makes them."""

    def __init__(self, c: Cluster) -> None:
        self.api = client.CustomObjectsApi(c.api)
        self.ns = c.namespace

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "httproutes", body)

    async def get(self, name: str) -> dict[str, Any]:
        return await self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "httproutes", name)

    async def list(self, **kw: Any) -> dict[str, Any]:
        return await self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, "httproutes", **kw)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return await self.api.replace_namespaced_custom_object(GROUP, VERSION, self.ns, "httproutes", name, body)

    async def patch(self, name: str, body: dict[str, Any], status: bool = False) -> dict[str, Any]:
        call = self.api.patch_namespaced_custom_object_status if status else self.api.patch_namespaced_custom_object
        # The client takes _content_type at run time; its type hints leave it out.
        return await call(GROUP, VERSION, self.ns, "httproutes", name, body, _content_type=MERGE)  # type: ignore[call-arg]

    async def delete(self, name: str) -> dict[str, Any]:
        return await self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, "httproutes", name)

    def watch(self, **kw: Any) -> watch.Watch:
        w = watch.Watch()
        return w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.ns, "httproutes", **kw)


async def collect(stream: Any, count: int | None = None, timeout: float = 10) -> list[dict[str, Any]]:
    """Events from a kubernetes-asyncio watch until ``count`` arrived or the stream ended."""
    events: list[dict[str, Any]] = []

    async def run() -> None:
        async for event in stream:
            events.append(event)
            if count is not None and len(events) >= count:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await stream.close()
    return events


def parent_status(reason: str = "Accepted", status: str = "True") -> dict[str, Any]:
    """One HTTPRoute status.parents entry that the CRD's schema accepts."""
    condition = {
        "type": "Accepted",
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    return {
        "parentRef": {"name": "gw"},
        "controllerName": "mirrorplane.io/gateway-controller",
        "conditions": [condition],
    }


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _status_of(exc: client.ApiException) -> dict[str, Any]:
    """The Status object an error answer carries."""
    assert exc.body is not None, f"HTTP {exc.status} without a body"
    status: dict[str, Any] = json.loads(exc.body)
    return status


# -- objects: server-owned fields, generation, status, conflicts ------------------------------


async def test_create_sets_uid_timestamps_resource_version_and_generation(cluster: Cluster) -> None:
    routes = Routes(cluster)
    created = await routes.create(route("a", status={"parents": [{"controllerName": "x"}]}))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and rv(created) > 0
    assert "status" not in created or created["status"] != {"parents": [{"controllerName": "x"}]}, (
        "create must ignore .status where there is a status subresource"
    )
    listed = await routes.list()
    assert int(listed["metadata"]["resourceVersion"]) >= rv(created)
    with pytest.raises(client.ApiException) as exc:
        await routes.create(route("a"))
    assert exc.value.status == 409 and _status_of(exc.value)["reason"] == "AlreadyExists"


async def test_generation_counts_spec_changes_only(cluster: Cluster) -> None:
    routes = Routes(cluster)
    created = await routes.create(route("a"))
    labelled = await routes.patch("a", {"metadata": {"labels": {"team": "x"}}})
    assert labelled["metadata"]["generation"] == 1 and rv(labelled) > rv(created)
    with_status = await routes.patch("a", {"status": {"parents": []}}, status=True)
    assert with_status["metadata"]["generation"] == 1
    changed = await routes.patch("a", {"spec": {"hostnames": ["a.example"]}})
    assert changed["metadata"]["generation"] == 2
    again = await routes.patch("a", {"spec": {"hostnames": ["a.example"]}})
    assert again["metadata"]["generation"] == 2, "a no-op patch changes nothing"


async def test_status_subresource_is_isolated_from_the_main_resource(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("a"))
    written = await routes.patch(
        "a", {"status": {"parents": [parent_status()]}, "spec": {"hostnames": ["ignored.example"]}}, status=True
    )
    assert written["status"]["parents"][0]["controllerName"] == "mirrorplane.io/gateway-controller"
    assert "hostnames" not in written["spec"], "a /status write must not change the spec"
    main = await routes.patch("a", {"status": {"parents": []}, "spec": {"hostnames": ["b.example"]}})
    assert main["spec"]["hostnames"] == ["b.example"]
    assert main["status"]["parents"][0]["controllerName"] == "mirrorplane.io/gateway-controller", (
        "a write to the main resource must not change .status"
    )
    current = await routes.get("a")
    current["status"] = {"parents": []}
    replaced = await routes.replace(current)
    assert replaced["status"]["parents"], "PUT to the main resource keeps .status too"


async def test_update_with_a_stale_resource_version_conflicts(cluster: Cluster) -> None:
    routes = Routes(cluster)
    created = await routes.create(route("a"))
    fresh = await routes.replace({**created, "spec": {**created["spec"], "hostnames": ["x.example"]}})
    assert rv(fresh) > rv(created)
    with pytest.raises(client.ApiException) as exc:
        await routes.replace({**created, "spec": {**created["spec"], "hostnames": ["y.example"]}})
    status = _status_of(exc.value)
    assert exc.value.status == 409 and status["reason"] == "Conflict" and status["kind"] == "Status"
    with pytest.raises(client.ApiException) as exc:
        await routes.patch("a", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {}})
    assert exc.value.status == 409, "a resourceVersion in a patch is a precondition"


async def test_lease_updates_are_optimistic_so_only_one_candidate_wins(cluster: Cluster) -> None:
    leases = client.CoordinationV1Api(cluster.api)
    spec = client.V1LeaseSpec(holder_identity="replica-a", lease_duration_seconds=15)
    created = await leases.create_namespaced_lease(
        cluster.namespace, client.V1Lease(metadata=client.V1ObjectMeta(name="mirrorplane"), spec=spec)
    )
    seen_by_b, seen_by_c = created, await leases.read_namespaced_lease("mirrorplane", cluster.namespace)
    seen_by_b.spec.holder_identity = "replica-b"
    won = await leases.replace_namespaced_lease("mirrorplane", cluster.namespace, seen_by_b)
    assert won.spec.holder_identity == "replica-b"
    seen_by_c.spec.holder_identity = "replica-c"
    with pytest.raises(client.ApiException) as exc:
        await leases.replace_namespaced_lease("mirrorplane", cluster.namespace, seen_by_c)
    assert exc.value.status == 409


async def test_missing_object_is_a_not_found_status(cluster: Cluster) -> None:
    with pytest.raises(client.ApiException) as exc:
        await Routes(cluster).get("nope")
    status = _status_of(exc.value)
    assert exc.value.status == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound" and status["details"]["name"] == "nope"


async def test_the_same_object_is_served_under_v1beta1(cluster: Cluster) -> None:
    await Routes(cluster).create(route("a"))
    api = client.CustomObjectsApi(cluster.api)
    old = await api.get_namespaced_custom_object(GROUP, "v1beta1", cluster.namespace, "httproutes", "a")
    assert old["apiVersion"] == f"{GROUP}/v1beta1" and old["spec"]["parentRefs"][0]["name"] == "gw"


async def test_writes_are_defaulted_and_validated_against_the_crd(cluster: Cluster) -> None:
    routes = Routes(cluster)
    created = await routes.create(route("a"))
    assert created["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert created["spec"]["parentRefs"][0]["kind"] == "Gateway"
    with pytest.raises(client.ApiException) as exc:
        await routes.create(route("bad", port=0))
    assert exc.value.status == 422 and _status_of(exc.value)["reason"] == "Invalid"
    assert "spec.rules[0].backendRefs[0].port" in _status_of(exc.value)["message"]
    with pytest.raises(client.ApiException) as exc:
        await routes.patch("a", {"status": {"parents": [parent_status(status="Maybe")]}}, status=True)
    assert exc.value.status == 422, "status writes are validated too"
    pruned = await routes.patch("a", {"spec": {"notAField": 1}})
    assert "notAField" not in pruned["spec"], "unknown fields are dropped unless fieldValidation=Strict"


async def test_strategic_merge_patch_merges_containers_by_name(cluster: Cluster) -> None:
    apps = client.AppsV1Api(cluster.api)
    container = {"name": "envoy", "image": "envoy:1", "ports": [{"containerPort": 8000}]}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "envoy"},
        "spec": {
            "selector": {"matchLabels": {"app": "envoy"}},
            "template": {
                "metadata": {"labels": {"app": "envoy"}},
                "spec": {"containers": [container, {"name": "side", "image": "s:1"}]},
            },
        },
    }
    # A plain dict body, as kubectl sends it: the client serializes it as is (its hints name only the model).
    await apps.create_namespaced_deployment(cluster.namespace, body)  # type: ignore[arg-type]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "envoy", "image": "envoy:2"}]}}}}
    patched = await apps.patch_namespaced_deployment("envoy", cluster.namespace, patch)  # strategic by default
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert containers["envoy"].image == "envoy:2" and containers["envoy"].ports[0].container_port == 8000
    assert containers["side"].image == "s:1"
    assert patched.metadata.generation == 2


async def test_a_service_gets_a_cluster_ip_that_updates_keep(cluster: Cluster) -> None:
    core = client.CoreV1Api(cluster.api)
    body = {
        "metadata": {"name": "envoy"},
        "spec": {"selector": {"app": "envoy"}, "ports": [{"name": "http", "port": 8000}]},
    }
    # A plain dict body, as kubectl sends it: the client serializes it as is (its hints name only the model).
    created = await core.create_namespaced_service(cluster.namespace, body)  # type: ignore[arg-type]
    assert created.spec.cluster_ip and created.spec.cluster_ips == [created.spec.cluster_ip]
    assert created.spec.type == "ClusterIP" and created.spec.ports[0].protocol == "TCP"
    more = {"spec": {"ports": [{"name": "admin", "port": 9901}]}}
    patched = await core.patch_namespaced_service("envoy", cluster.namespace, more)  # strategic merge
    assert patched.spec.cluster_ip == created.spec.cluster_ip
    assert [p.port for p in patched.spec.ports] == [8000, 9901], "Service ports merge by port"


async def test_a_deleted_namespace_terminates_then_goes_with_its_objects(cluster: Cluster) -> None:
    core = client.CoreV1Api(cluster.api)
    routes = Routes(cluster)
    await routes.create(route("a"))
    await core.delete_namespace(cluster.namespace)
    terminating = await core.read_namespace(cluster.namespace)
    assert terminating.status.phase == "Terminating" and terminating.metadata.deletion_timestamp
    with pytest.raises(client.ApiException) as exc:
        await routes.create(route("b"))
    assert exc.value.status == 403 and _status_of(exc.value)["reason"] == "Forbidden"

    async def gone() -> bool:
        try:
            await core.read_namespace(cluster.namespace)
        except client.ApiException as err:
            return err.status == 404
        return False

    await wait_until(gone, timeout=60, message="namespace deleted")
    everywhere = await client.CustomObjectsApi(cluster.api).list_cluster_custom_object(GROUP, VERSION, "httproutes")
    assert not [o for o in everywhere["items"] if o["metadata"]["namespace"] == cluster.namespace]


# -- list ------------------------------------------------------------------------------------


async def test_list_filters_by_label_and_field_selectors(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("a", {"app": "web", "tier": "front"}))
    await routes.create(route("b", {"app": "api"}))
    await routes.create(route("c"))

    async def names(**kw: Any) -> list[str]:
        return sorted(o["metadata"]["name"] for o in (await routes.list(**kw))["items"])

    assert await names(label_selector="app=web") == ["a"]
    assert await names(label_selector="app==web") == ["a"]
    assert await names(label_selector="app!=web") == ["b", "c"]
    assert await names(label_selector="app in (web,api)") == ["a", "b"]
    assert await names(label_selector="app notin (web)") == ["b", "c"]
    assert await names(label_selector="tier") == ["a"]
    assert await names(label_selector="!tier") == ["b", "c"]
    assert await names(label_selector="app,tier=front") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    assert await names(field_selector=f"metadata.namespace={cluster.namespace}") == ["a", "b", "c"]


async def test_list_pages_with_limit_and_continue(cluster: Cluster) -> None:
    routes = Routes(cluster)
    for name in "abcde":
        await routes.create(route(name))
    first = await routes.list(limit=2)
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    names = [o["metadata"]["name"] for o in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = await routes.list(limit=2, _continue=token)
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue")
    assert sorted(names) == list("abcde") and len(names) == 5


# -- watch -----------------------------------------------------------------------------------


async def test_watch_from_a_resource_version_sends_later_changes_in_order(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("before"))
    start = (await routes.list())["metadata"]["resourceVersion"]
    await routes.create(route("a"))
    await routes.patch("a", {"spec": {"hostnames": ["a.example"]}})
    await routes.delete("a")
    events = await collect(routes.watch(resource_version=start, timeout_seconds=5), count=3)
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [rv(e["raw_object"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(start)


async def test_watch_without_a_resource_version_starts_with_the_current_objects(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("a"))
    await routes.create(route("b"))
    stream = routes.watch(timeout_seconds=5)
    events = await collect(stream, count=2)
    assert sorted((e["type"], e["raw_object"]["metadata"]["name"]) for e in events) == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_streams_changes_made_while_it_is_open(cluster: Cluster) -> None:
    routes = Routes(cluster)
    start = (await routes.list())["metadata"]["resourceVersion"]
    stream = routes.watch(resource_version=start, timeout_seconds=10)
    task = asyncio.create_task(collect(stream, count=2))
    await asyncio.sleep(0)  # the watch request goes out first; the events must still arrive
    await routes.create(route("a"))
    await routes.patch("a", {"status": {"parents": []}}, status=True)
    events = await task
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert events[1]["raw_object"]["status"] == {"parents": []}


async def test_watch_ends_after_timeout_seconds(cluster: Cluster) -> None:
    routes = Routes(cluster)
    start = (await routes.list())["metadata"]["resourceVersion"]
    began = time.monotonic()
    events = await collect(routes.watch(resource_version=start, timeout_seconds=1), timeout=10)
    took = time.monotonic() - began
    assert all(e["type"] == "BOOKMARK" for e in events)
    assert 0.9 <= took < 5, f"the server should end the watch after ~1 s, took {took:.2f}s"


async def test_a_label_selector_watch_sees_an_object_leave_as_deleted(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("a", {"serve": "yes"}))
    start = (await routes.list())["metadata"]["resourceVersion"]
    await routes.patch("a", {"metadata": {"labels": {"serve": "no"}}})
    await routes.patch("a", {"metadata": {"labels": {"serve": "yes"}}})
    events = await collect(routes.watch(resource_version=start, label_selector="serve=yes", timeout_seconds=5), count=2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_watch_bookmarks_carry_the_resource_version_to_resume_from(cluster: Cluster) -> None:
    cluster.require_fake("a real API server sends bookmarks only about once a minute")
    routes = Routes(cluster)
    await routes.create(route("a"))
    start = (await routes.list())["metadata"]["resourceVersion"]
    await Routes(cluster).patch("a", {"spec": {"hostnames": ["a.example"]}})
    events = await collect(routes.watch(resource_version=start, allow_watch_bookmarks=True, timeout_seconds=5), count=2)
    assert [e["type"] for e in events] == ["MODIFIED", "BOOKMARK"]
    bookmark = events[1]["raw_object"]
    assert bookmark["kind"] == "HTTPRoute" and set(bookmark["metadata"]) == {"resourceVersion"}
    assert int(bookmark["metadata"]["resourceVersion"]) >= rv(events[0]["raw_object"])


async def test_send_initial_events_ends_the_initial_list_with_a_bookmark(cluster: Cluster) -> None:
    cluster.require_fake("sendInitialEvents needs the WatchList feature, which not every cluster enables")
    core = client.CoreV1Api(cluster.api)
    # A plain dict body, as kubectl sends it: the client serializes it as is (its hints name only the model).
    await core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": "a"}, "data": {"k": "v"}})  # type: ignore[arg-type]
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        cluster.namespace,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    events = await collect(stream, count=2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["raw_object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_a_compacted_resource_version_is_gone(cluster: Cluster) -> None:
    fake = cluster.require_fake("compaction cannot be forced on a real cluster")
    routes = Routes(cluster)
    old = (await routes.list())["metadata"]["resourceVersion"]
    await routes.create(route("a"))
    fake.compact()
    with pytest.raises(client.ApiException) as exc:
        await collect(routes.watch(resource_version=old, timeout_seconds=5))
    assert exc.value.status == 410 and "too old resource version" in str(exc.value.reason)
    with pytest.raises(client.ApiException) as exc:
        await routes.list(resource_version=old, resource_version_match="Exact")
    assert exc.value.status == 410
    # A fresh list gives a resourceVersion to watch from again.
    events = await collect(
        routes.watch(resource_version=(await routes.list())["metadata"]["resourceVersion"], timeout_seconds=1)
    )
    assert all(e["type"] == "BOOKMARK" for e in events)


# -- the fake's own controls, over plain HTTP --------------------------------------------------


async def http_watch_lines(session: aiohttp.ClientSession, url: str, lines: list[dict[str, Any]]) -> str:
    """Read a watch stream into ``lines``; return how it ended ("eof" or the error class)."""
    try:
        async with session.get(url) as resp:
            assert resp.status == 200
            async for raw in resp.content:
                if raw.strip():
                    lines.append(json.loads(raw))
        return "eof"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


@pytest.fixture
async def fake(cluster: Cluster) -> FakeApiServer:
    return cluster.require_fake("it tests the fake's own controls and documents")


async def test_discovery_documents(fake: FakeApiServer) -> None:
    async with aiohttp.ClientSession(fake.url, timeout=HTTP_TIMEOUT) as s:
        assert (await (await s.get("/version")).json())["major"] == "1"
        assert (await (await s.get("/api")).json())["versions"] == ["v1"]
        groups = {g["name"]: g for g in (await (await s.get("/apis")).json())["groups"]}
        assert {"apps", "coordination.k8s.io", "discovery.k8s.io", GROUP} <= set(groups)
        assert groups[GROUP]["preferredVersion"]["version"] == "v1"
        assert [v["version"] for v in groups[GROUP]["versions"]] == ["v1", "v1beta1"]
        v1 = {r["name"]: r for r in (await (await s.get(f"/apis/{GROUP}/v1")).json())["resources"]}
        assert v1["httproutes"]["kind"] == "HTTPRoute" and v1["httproutes"]["namespaced"] is True
        assert "watch" in v1["httproutes"]["verbs"] and "httproutes/status" in v1
        assert v1["gatewayclasses"]["namespaced"] is False and v1["gatewayclasses"]["shortNames"] == ["gc"]
        assert "referencegrants/status" not in v1
        core = {r["name"] for r in (await (await s.get("/api/v1")).json())["resources"]}
        assert {"namespaces", "services", "secrets", "configmaps", "serviceaccounts"} <= core
        slices = (await (await s.get("/apis/discovery.k8s.io/v1")).json())["resources"]
        assert slices[0]["name"] == "endpointslices"
        assert (await s.get("/apis/nope.example/v1")).status == 404


async def test_watch_over_http_with_watch_1_and_a_410_error_event(fake: FakeApiServer, cluster: Cluster) -> None:
    path = f"/apis/{GROUP}/v1/namespaces/{cluster.namespace}/httproutes"
    fake.create({**route("a"), "metadata": {"name": "a", "namespace": cluster.namespace}})
    start = fake.resource_version
    fake.patch("HTTPRoute", "a", {"spec": {"hostnames": ["h.example"]}}, namespace=cluster.namespace)
    async with aiohttp.ClientSession(fake.url, timeout=HTTP_TIMEOUT) as s:
        lines: list[dict[str, Any]] = []
        ended = await http_watch_lines(s, f"{path}?watch=1&resourceVersion={start}&timeoutSeconds=1", lines)
        assert ended == "eof" and [line["type"] for line in lines] == ["MODIFIED"]
        fake.compact()
        lines = []
        await http_watch_lines(s, f"{path}?watch=true&resourceVersion={start}", lines)
        assert lines[0]["type"] == "ERROR"
        assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"


async def test_restart_cuts_watches_and_keeps_state_and_resource_versions(
    fake: FakeApiServer, cluster: Cluster
) -> None:
    ns = cluster.namespace
    path = f"/apis/{GROUP}/v1/namespaces/{ns}/httproutes"
    fake.create({**route("a"), "metadata": {"name": "a", "namespace": ns}})
    start = fake.resource_version
    async with aiohttp.ClientSession(fake.url, timeout=HTTP_TIMEOUT) as s:
        lines: list[dict[str, Any]] = []
        reader = asyncio.create_task(http_watch_lines(s, f"{path}?watch=1&resourceVersion={start}", lines))
        await wait_until(lambda: fake.open_watches == 1)
        fake.stop()
        assert await asyncio.wait_for(reader, 10) != "eof", "a restart cuts the stream, it does not end it cleanly"
        fake.create({**route("b"), "metadata": {"name": "b", "namespace": ns}})  # while the server is down
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(path)
        fake.start()
        listed = await (await s.get(path)).json()
        assert sorted(o["metadata"]["name"] for o in listed["items"]) == ["a", "b"]
        assert int(listed["metadata"]["resourceVersion"]) == fake.resource_version > start
        lines = []
        await http_watch_lines(s, f"{path}?watch=1&resourceVersion={start}&timeoutSeconds=0.5", lines)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "b")]


async def test_request_log_and_patch_content_types(fake: FakeApiServer, cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("a"))
    fake.clear_requests()
    await routes.patch("a", {"status": {"parents": []}}, status=True)
    await routes.patch("a", {"metadata": {"labels": {"x": "y"}}})
    status_patches = fake.requests(method="PATCH", path="/status")
    assert [(r.content_type, r.json()) for r in status_patches] == [(MERGE, {"status": {"parents": []}})]
    assert len(fake.requests(method="PATCH")) == 2
    async with aiohttp.ClientSession(fake.url, timeout=HTTP_TIMEOUT) as s:
        url = f"/apis/{GROUP}/v1/namespaces/{cluster.namespace}/httproutes/a"
        resp = await s.patch(url, data=b"{}", headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert resp.status == 415, "custom resources take no strategic merge patch"
        resp = await s.patch(
            url,
            json=[{"op": "add", "path": "/spec/hostnames", "value": ["j.example"]}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert resp.status == 200 and (await resp.json())["spec"]["hostnames"] == ["j.example"]
        bad = await s.get(f"/apis/{GROUP}/v1/httproutes?labelSelector=a%20in%20(")
        assert bad.status == 400 and (await bad.json())["reason"] == "BadRequest"
        strict = await s.patch(
            f"{url}?fieldValidation=Strict", json={"spec": {"notAField": 1}}, headers={"Content-Type": MERGE}
        )
        assert strict.status == 422 and 'unknown field \\"spec.notAField\\"' in await strict.text()
        missing_ns = await s.post(f"/apis/{GROUP}/v1/namespaces/nowhere/httproutes", json=route("z"))
        assert missing_ns.status == 404 and "namespaces" in (await missing_ns.json())["message"]


async def test_table_output_for_kubectl_get(fake: FakeApiServer, cluster: Cluster) -> None:
    fake.create(
        {**route("a"), "metadata": {"name": "a", "namespace": cluster.namespace}, "spec": {"hostnames": ["a.example"]}}
    )
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with aiohttp.ClientSession(fake.url, timeout=HTTP_TIMEOUT) as s:
        table = await (
            await s.get(f"/apis/{GROUP}/v1/namespaces/{cluster.namespace}/httproutes", headers={"Accept": accept})
        ).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Hostnames", "Age"]
    assert table["rows"][0]["cells"][:2] == ["a", ["a.example"]]
    assert table["rows"][0]["object"]["metadata"]["name"] == "a"


async def test_a_created_crd_serves_its_kind(fake: FakeApiServer, cluster: Cluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ],
        },
    }
    # A plain dict body, as kubectl sends it: the client serializes it as is (its hints name only the model).
    created_crd = await client.ApiextensionsV1Api(cluster.api).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    assert {c.type: c.status for c in created_crd.status.conditions}["Established"] == "True"
    widgets = client.CustomObjectsApi(cluster.api)
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
    created = await widgets.create_namespaced_custom_object("example.com", "v1", cluster.namespace, "widgets", body)
    assert created["metadata"]["generation"] == 1
    assert fake.get("wd", "w", cluster.namespace)["spec"] == {"size": 3}


# -- kubectl -------------------------------------------------------------------------------------

needs_kubectl = pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed on this machine")

MANIFEST = """\
apiVersion: v1
kind: Service
metadata: {{name: pipy, namespace: {ns}}}
spec:
  selector: {{app: pipy}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: pipy, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: pipy}}}}
  template:
    metadata: {{labels: {{app: pipy}}}}
    spec:
      containers:
      - {{name: pipy, image: "example/pipy:{tag}", ports: [{{containerPort: 8080}}]}}
      - {{name: side, image: "example/side:1"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: pipy, port: {port}}}]
"""


@needs_kubectl
async def test_kubectl_apply_creates_then_patches_on_reapply(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.format(ns=cluster.namespace, tag="1", port=8080))
    out = await kubectl_async(cluster.kubeconfig, "apply", "--validate=false", "-f", str(manifest))
    assert "httproute.gateway.networking.k8s.io/r created" in out.stdout, out.stderr
    manifest.write_text(MANIFEST.format(ns=cluster.namespace, tag="2", port=9090))
    out = await kubectl_async(cluster.kubeconfig, "apply", "--validate=false", "-f", str(manifest))
    assert "httproute.gateway.networking.k8s.io/r configured" in out.stdout, out.stderr
    assert "service/pipy unchanged" in out.stdout
    got = await Routes(cluster).get("r")
    assert [(b["name"], b["port"]) for b in got["spec"]["rules"][0]["backendRefs"]] == [("pipy", 9090)]
    assert got["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]
    deployment = await client.AppsV1Api(cluster.api).read_namespaced_deployment("pipy", cluster.namespace)
    images = {c.name: c.image for c in deployment.spec.template.spec.containers}
    assert images == {"pipy": "example/pipy:2", "side": "example/side:1"}
    if cluster.fake is not None:
        patches = {r.path.rsplit("/", 2)[-2]: r.content_type for r in cluster.fake.requests(method="PATCH")}
        assert patches == {"httproutes": MERGE, "deployments": "application/strategic-merge-patch+json"}


@needs_kubectl
async def test_kubectl_get_shows_status_written_through_the_subresource(cluster: Cluster, tmp_path: Path) -> None:
    routes = Routes(cluster)
    await routes.create(route("r"))
    await routes.patch("r", {"status": {"parents": [parent_status()]}}, status=True)
    out = await kubectl_async(cluster.kubeconfig, "get", "httproute", "r", "-n", cluster.namespace, "-o", "yaml")
    assert "controllerName: mirrorplane.io/gateway-controller" in out.stdout
    assert "reason: Accepted" in out.stdout
    table = await kubectl_async(cluster.kubeconfig, "get", "httproutes", "-n", cluster.namespace)
    assert table.stdout.split()[:3] == ["NAME", "HOSTNAMES", "AGE"] and "\nr " in table.stdout


@needs_kubectl
async def test_kubectl_get_watch_sees_a_change(cluster: Cluster) -> None:
    routes = Routes(cluster)
    await routes.create(route("r"))
    args = ("get", "httproute", "-n", cluster.namespace, "-w", "--output-watch-events")
    async with KubectlWatch(cluster.kubeconfig, *args) as w:
        await w.wait_for(lambda line: line.startswith("ADDED") and " r " in line)
        await routes.patch("r", {"spec": {"hostnames": ["w.example"]}})
        modified = await w.wait_for(lambda line: line.startswith("MODIFIED"))
        assert "w.example" in modified
        await routes.delete("r")
        await w.wait_for(lambda line: line.startswith("DELETED"))


async def test_python_m_fakeapi_serves_its_seed_until_stdin_closes(tmp_path: Path) -> None:
    """The benchmarks run the fake as a process of its own (a real API server is not in the
    control plane's process): seeded from a file, then reached over HTTP like any server."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "seeded"}}
    seeded = route("seeded-route")
    seeded["metadata"]["namespace"] = "seeded"
    seed = tmp_path / "seed.jsonl"
    seed.write_text(f"{json.dumps(namespace)}\n{json.dumps(seeded)}\n")
    kubeconfig = tmp_path / "kubeconfig"
    tests = Path(__file__).resolve().parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fakeapi", "--seed", str(seed), "--kubeconfig", str(kubeconfig),
        cwd=tests, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("ready http://127.0.0.1:"), line
        got = await kubectl_async(kubeconfig, "get", "httproute", "seeded-route", "-n", "seeded", "-o", "json")
        rule = json.loads(got.stdout)["spec"]["rules"][0]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}], "defaulted as a POST would be"
    finally:
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
