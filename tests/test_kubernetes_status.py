"""Status written to the cluster: by one replica at a time (the Lease holder), only when it
changed, without touching other controllers' entries, and surviving conflicts and deletions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from controlplane.controller import Controller
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from controlplane.providers import k8s_status
from controlplane.providers.k8s_status import StatusWriter, service_addresses, without_times
from controlplane.providers.kubernetes import KubernetesProvider
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.resources import CLUSTER, ROUTE
from controlplane.xds.tracking import Event, EventKind, NodeRegistry
from kube import EXAMPLES, FAST, GATEWAY, SYSTEM, Cluster, cluster, control_plane, lease, local_envoy, seed
from support import wait_until
from test_ads_delta import DeltaEnvoy

OTHER = {
    "parentRef": {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "someone-elses",
        "namespace": "server",
    },
    "controllerName": "example.com/other-controller",
    "conditions": [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "theirs",
            "observedGeneration": 1,
            "lastTransitionTime": "2020-01-01T00:00:00Z",
        }
    ],
}


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path) as c:
        await seed(c)
        yield c


async def ours(c: Cluster) -> list[dict[str, Any]]:
    route = await c.get("httproute", "http-route-sample", "server")
    return [p for p in (route.get("status") or {}).get("parents") or [] if p["controllerName"] == DEFAULT_CONTROLLER]


async def accepted_at(c: Cluster, generation: int) -> bool:
    parents = await ours(c)
    return len(parents) == 1 and all(
        cond["status"] == "True" and cond["observedGeneration"] == generation for cond in parents[0]["conditions"]
    )


async def drop_mirror(c: Cluster) -> None:
    text = (EXAMPLES / "30-httproute.yaml").read_text()
    await c.apply(text[: text.index("    filters:")] + text[text.index("    backendRefs:") :])


async def test_one_replica_writes_and_another_takes_over(c: Cluster) -> None:
    duration = 2.0
    replicas = [control_plane(c, lease=lease(f"replica-{n}", duration)) for n in "abc"]
    for plane, _, _ in replicas:
        await plane.start()
    try:

        def leaders() -> list[int]:
            return [i for i, (_, _, s) in enumerate(replicas) if s.is_leader]

        await wait_until(lambda: len(leaders()) == 1, timeout=60, message="one leader")
        await wait_until(lambda: accepted_at(c, 1), message="status written")
        first = leaders()[0]
        assert all(plane.cache.get(GATEWAY) is not None for plane, _, _ in replicas), "every replica serves xDS"
        for i, (_, _, s) in enumerate(replicas):
            assert s.writer is not None
            assert (s.writer.writes > 0) == (i == first), "only the Lease holder writes"
        held = await c.get("lease", "mirrorplane-status-writer", SYSTEM)
        assert held["spec"]["holderIdentity"] == f"replica-{'abc'[first]}"

        # A clean stop releases the Lease, so a standby needs no expiry to take it, and writes what
        # changed. Waited on as events, not timed: the machine may be slow.
        await replicas[first][0].stop()
        released = await c.get("lease", "mirrorplane-status-writer", SYSTEM)
        assert released["spec"]["holderIdentity"] != f"replica-{'abc'[first]}", "stop() released the Lease"
        await wait_until(lambda: _other_leader(replicas, first), timeout=60, message="takeover")
        await drop_mirror(c)
        await wait_until(lambda: accepted_at(c, 2), message="the new leader writes the new generation")

        # A crash (no release): the last standby takes over once the Lease expires.
        second = next(i for i in leaders() if i != first)
        status = replicas[second][2]
        assert status.writer is not None and status.elector is not None  # started with a Lease
        await status.writer.stop()
        assert status.elector._task is not None  # running
        status.elector._task.cancel()
        last_renewal = _time((await c.get("lease", "mirrorplane-status-writer", SYSTEM))["spec"]["renewTime"])
        third = next(i for i in range(3) if i not in (first, second))
        await wait_until(lambda: replicas[third][2].is_leader, timeout=60, message="takeover after expiry")
        held = await c.get("lease", "mirrorplane-status-writer", SYSTEM)
        assert held["spec"]["holderIdentity"] == f"replica-{'abc'[third]}"
        # Not before the Lease expired: a crashed holder may still be writing until then.
        assert (_time(held["spec"]["acquireTime"]) - last_renewal).total_seconds() >= duration
        assert held["spec"]["leaseTransitions"] >= 2
    finally:
        for plane, _, _ in replicas:
            await plane.stop()


async def test_start_up_status_writes_wait_for_the_envoy_to_answer_the_first_push(c: Cluster) -> None:
    """At a cold start the status writes (10,000 at 10,000 routes) competed for the CPUs with the
    first push and the Envoy applying it; now they give way to a push in flight. The Envoy is
    connected and waiting before the cluster can be listed, so the first snapshot is pushed to it
    while the start-up writes are due."""
    fake = c.need_fake("holding the listing back until the Envoy is connected")
    fake.stop()
    plane, _, status = control_plane(c)
    # When the Envoy ACKed the first RouteConfiguration: how many status writes the API had answered.
    writes_at_ack: list[int] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.ACK and event.type_url == ROUTE and not writes_at_ack:
            writes_at_ack.append(len(fake.requests("PATCH", "/status")))

    plane.registry.add_observer(on_event)
    started = asyncio.create_task(plane.start())  # retries the unreachable API meanwhile
    envoy = local_envoy(plane, "first-push")
    try:
        await envoy.start()
        await wait_until(lambda: len(plane.registry) == 1, message="the Envoy connected, waiting for a snapshot")
        fake.start()
        await started
        await wait_until(lambda: writes_at_ack, timeout=30, message="the Envoy ACKed the first RouteConfiguration")
        await wait_until(lambda: accepted_at(c, 1), message="status written")
        assert status.writer is not None and status.writer.writes > 0
        assert writes_at_ack == [0], "no status was written before the Envoy answered the first push"
    finally:
        started.cancel()
        await envoy.stop()
        await plane.stop()


async def test_status_is_written_while_an_envoy_never_answers_a_push(c: Cluster) -> None:
    """Status gives way to a push in flight for ``GIVE_WAY_MAX`` at most: an Envoy that never
    ACKs holds it back no longer."""
    plane, _, status = control_plane(c)
    await plane.start()
    envoy = DeltaEnvoy(int(plane.xds_address.rsplit(":", 1)[1]), node_id="never-answers", gateway=GATEWAY)
    try:
        await wait_until(lambda: accepted_at(c, 1), message="status written")
        await envoy.request(CLUSTER, ["*"])
        await envoy.recv()  # and never ACKed
        assert plane.registry.pushing()
        await drop_mirror(c)
        await wait_until(lambda: accepted_at(c, 2), timeout=30, message="the new generation's status written")
        assert plane.registry.pushing(), "written while the push was still unanswered"
        assert status.writer is not None and status.writer.writes >= 2
    finally:
        await envoy.close()
        await plane.stop()


async def test_a_wait_for_pushes_that_ended_answered_bounds_the_next_one_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Status gives way to every push, not only the first: once a wait had ended with the push
    answered, its start stayed set, so ``GIVE_WAY_MAX`` after it every write went ahead of the
    push it should have waited for (4 of 9 changes in traced runs of benchmarks.change_latency
    --kubernetes-only, the write and its echo taken by the loop just before the push)."""
    monkeypatch.setattr(k8s_status, "GIVE_WAY_MAX", 0.3)
    registry = NodeRegistry()
    writer = StatusWriter(cast(Any, None), cast(Any, None), controller_name=DEFAULT_CONTROLLER, pushes=registry)
    stream = registry.open_stream(node_id="envoy", gateway=GATEWAY, peer="test")
    for version in ("v1", "v2"):
        registry.snapshot_due(stream)  # a change's push
        waiting = asyncio.create_task(writer._give_way())
        await asyncio.sleep(0.05)
        assert not waiting.done(), f"{version}: went ahead of the push"
        registry.record_snapshot(stream, version)  # taken up, nothing in flight: answered
        await waiting
        await asyncio.sleep(0.4)  # GIVE_WAY_MAX since this wait began


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def _other_leader(replicas: list[Any], first: int) -> bool:
    return any(s.is_leader for i, (_, _, s) in enumerate(replicas) if i != first)


async def test_other_controllers_entries_are_kept_and_writes_happen_only_on_change(c: Cluster) -> None:
    fake = c.need_fake("counting status writes")
    fake.patch("HTTPRoute", "http-route-sample", {"status": {"parents": [OTHER]}}, namespace="server", status=True)
    plane, _, status = control_plane(c)
    await plane.start()
    try:
        await wait_until(lambda: accepted_at(c, 1), message="our entry written")
        route = await c.get("httproute", "http-route-sample", "server")
        assert OTHER in route["status"]["parents"], "the other controller's entry is untouched"
        gateway = await c.get("gateway", "simple-gateway", "server")
        service = await c.get("service", "envoy", SYSTEM)
        # No load balancer (yet): the fleet's ClusterIP, typed.
        assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": service["spec"]["clusterIP"]}]

        def status_patches() -> int:
            return len([r for r in fake.requests(method="PATCH") if r.path.endswith("/status")])

        writes = status_patches()
        translations = plane.controller.translations
        # Something changes that the translation reads, but no status depends on.
        await c.kubectl("label", "service", "pipy", "-n", "server", "touched=yes")
        await wait_until(lambda: plane.controller.translations > translations, message="translated again")
        assert status.writer is not None
        await status.writer.sync()
        assert status_patches() == writes, "same status (ignoring lastTransitionTime): no write"

        # Our entry for a Gateway the route no longer names is removed; theirs stays.
        route["spec"]["parentRefs"] = [{"name": "not-ours"}]
        await c.kubectl(
            "patch",
            "httproute",
            "http-route-sample",
            "-n",
            "server",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"parentRefs": route["spec"]["parentRefs"]}}),
        )
        await wait_until(lambda: _none_ours(c), message="our stale entry removed")
        route = await c.get("httproute", "http-route-sample", "server")
        assert route["status"]["parents"] == [OTHER]
    finally:
        await plane.stop()


async def _none_ours(c: Cluster) -> bool:
    return await ours(c) == []


async def test_conflict_is_retried_and_deleted_objects_are_skipped(c: Cluster) -> None:
    # A provider that listed once and does not watch: its view of the route goes stale.
    provider = KubernetesProvider(c.kubeconfig, options=FAST)
    controller = Controller(SnapshotCache())
    try:
        controller.update(await provider.start())
        assert provider.api is not None
        writer = StatusWriter(provider.api, provider, controller_name=DEFAULT_CONTROLLER)
        writer.on_statuses(controller.statuses)
        await c.kubectl("label", "httproute", "http-route-sample", "-n", "server", "changed=yes")
        assert await writer.sync() == 1, "a stale resourceVersion: 409, to be retried"
        assert not await accepted_at(c, 1)
        await provider.resync()
        assert await writer.sync() == 0
        assert await accepted_at(c, 1)
        # The Gateway is deleted while its (changed) status is being written: 404, nothing to retry.
        await c.kubectl("delete", "gateway", "simple-gateway", "-n", "server")
        key = ("Gateway", "server", "simple-gateway")
        changed = {
            **controller.statuses[key],
            "conditions": [{**controller.statuses[key]["conditions"][0], "message": "changed"}],
        }
        writer.on_statuses({**controller.statuses, key: changed})
        assert await writer.sync() == 0, "404 for a deleted object is not an error"
        assert any(r.status == 404 for r in c.fake.requests(method="PATCH")) if c.fake else True
    finally:
        await provider.close()


def test_which_statuses_changed_is_worked_out_by_the_writer_not_between_a_translation_and_its_push() -> None:
    """The controller hands on the same body for a status that did not change. The writer's
    listener compared all of them by identity as the controller called it, on the loop between
    the translation and its push: 4-9 ms of a change at 10,000 routes. The writer now does it
    when it runs (after giving way to the push), over every translation since it last ran."""
    writer = StatusWriter(cast(Any, None), cast(Any, None), controller_name=DEFAULT_CONTROLLER)
    k0, k1, k2, k3 = (("HTTPRoute", "server", f"r{i}") for i in range(4))
    a, b, c = {"parents": ["a"]}, {"parents": ["b"]}, {"parents": ["c"]}
    writer.on_statuses({k0: a, k1: b, k2: c})
    writer._take_wanted()
    writer._dirty.clear()  # written
    # Two translations before the writer runs: r0 changed, then r1 (an equal body, made anew),
    # r2 no longer wanted, r3 new.
    writer.on_statuses({k0: {"parents": ["a2"]}, k1: b, k2: c})
    writer.on_statuses({k0: writer.wanted[k0], k1: {"parents": ["b"]}, k3: {"parents": ["d"]}})
    assert writer._dirty == set(), "compared as the controller called"
    writer._take_wanted()
    assert writer._dirty == {k0, k1, k2, k3}


def test_addresses_come_from_the_load_balancer_else_the_cluster_ip() -> None:
    spec = {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"]}
    assert service_addresses(spec, {}) == [
        {"type": "IPAddress", "value": "10.96.0.10"},
        {"type": "IPAddress", "value": "fd00::10"},
    ]
    lb = {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}, {"hostname": "lb.example.com"}]}}
    assert service_addresses(spec, lb) == [
        {"type": "IPAddress", "value": "203.0.113.1"},
        {"type": "Hostname", "value": "lb.example.com"},
    ]
    assert service_addresses({"clusterIP": "None"}, {}) is None
    assert without_times({"conditions": [{"type": "A", "lastTransitionTime": "t"}]}) == {"conditions": [{"type": "A"}]}
