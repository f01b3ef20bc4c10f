"""Prometheus metrics through the real /metrics endpoint of a control plane serving a real Envoy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from admin_support import NACK_MESSAGE, push_rejected_route, wait_all_acked
from controlplane.metrics import NACK_MESSAGE_HIDDEN
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from e2e import GATEWAY, LOCAL, Stack, start_stack
from support import free_port, wait_until

TYPES = ("clusters", "endpoints", "listeners", "routes")


class Scrape:
    """One /metrics response: sample value by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.names = {name for name, _ in self.samples}

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """A sample that must be there, for comparisons (a missing one fails naming it)."""
        got = self.get(name, **labels)
        assert got is not None, f"no sample {name} {labels}"
        return got

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        want = set(labels.items())
        return {k: v for (n, k), v in self.samples.items() if n == name and want <= k}


async def scrape(port: int | None) -> Scrape:
    assert port is not None, "the control plane serves no HTTP port"
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape(await resp.text())


async def scrape_until(stack: Stack, value: float, name: str, **labels: str) -> Scrape:
    """Scrape until the sample ``name{labels}`` reads ``value``; the last scrape."""
    last: Scrape | None = None

    async def reached() -> bool:
        nonlocal last
        last = await scrape(stack.plane.http_port)
        return last.get(name, **labels) == value

    await wait_until(reached, message=f"{name}{labels} == {value} in /metrics")
    assert last is not None
    return last


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path, plane_options={"http_host": "127.0.0.1", "http_port": free_port()})
    try:
        await wait_all_acked(s)
        yield s
    finally:
        await s.exits.aclose()


async def test_streams_pushes_acks_resources_and_translation(stack):
    m = await scrape(stack.plane.http_port)
    snapshot = stack.plane.cache.get(GATEWAY)
    for t in TYPES:
        assert m.get("mirrorplane_xds_streams", gateway=GATEWAY, type=t) == 1, t
        assert m.get("mirrorplane_xds_pushes_total", gateway=GATEWAY, type=t) == 1, t
        assert m.get("mirrorplane_xds_acks_total", gateway=GATEWAY, type=t) == 1, t
        assert m.get("mirrorplane_xds_push_ack_seconds_count", type=t) == 1, t
        assert m.get("mirrorplane_xds_push_ack_seconds_bucket", type=t, le="+Inf") == 1, t
        type_url = next(u for u in snapshot.types if snapshot[u].short_name == t)
        assert m.get("mirrorplane_xds_resources", gateway=GATEWAY, type=t) == len(snapshot[type_url]), t
    assert m.get("mirrorplane_xds_stream_connects_total", gateway=GATEWAY) == 1
    assert m.get("mirrorplane_translation_seconds_count") == 1
    assert 0 < m.value("mirrorplane_translation_seconds_sum") < 5
    assert m.get("mirrorplane_status_changes_total") == len(stack.plane.controller.statuses)
    assert m.get("mirrorplane_provider_events_total") == 0
    assert m.matching("mirrorplane_xds_nacks_total") == {}
    assert m.matching("mirrorplane_xds_nack_info") == {}
    # Process metrics come with it.
    assert m.value("process_cpu_seconds_total") > 0
    assert m.value("process_resident_memory_bytes") > 0
    assert "python_info" in m.names


async def test_file_edit_counts_a_provider_event_a_translation_and_a_push(stack):
    stack.write("route.yaml", (stack.dir / "route.yaml").read_text().replace("name: pipy-mirror", "name: missing-mirror"))
    m = await scrape_until(stack, 2, "mirrorplane_xds_acks_total", gateway=GATEWAY, type="routes")
    assert m.value("mirrorplane_provider_events_total") >= 1
    assert m.value("mirrorplane_translation_seconds_count") >= 2
    assert m.get("mirrorplane_status_changes_total") == len(stack.plane.controller.statuses) + 1  # the route's ResolvedRefs
    assert m.get("mirrorplane_xds_pushes_total", gateway=GATEWAY, type="routes") == 2
    assert m.get("mirrorplane_xds_resources", gateway=GATEWAY, type="clusters") == 1  # the mirror's cluster is gone


async def test_a_nack_is_counted_and_shows_envoys_message(stack):
    bad = push_rejected_route(stack)
    m = await scrape_until(stack, 1, "mirrorplane_xds_nacks_total", gateway=GATEWAY, type="routes")
    [(label_set, value)] = m.matching("mirrorplane_xds_nack_info").items()
    labels = dict(label_set)
    assert value == 1
    assert (labels["gateway"], labels["node_id"], labels["type"]) == (GATEWAY, "e2e", "routes")
    assert labels["version"] == bad.version_of("type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
    assert NACK_MESSAGE in labels["error"]
    assert m.get("mirrorplane_xds_push_ack_seconds_count", type="routes") == 2  # the NACK's latency too
    # The Envoy keeps its last good config.
    assert await stack.request("/", data=b"ok") == (200, b"ok")


async def test_an_exposed_metrics_port_hides_envoys_nack_message(tmp_path):
    """/metrics has no authentication: bound beyond loopback it keeps the NACK's labels but not
    Envoy's message, which can quote config (the admin API, authenticated, has it)."""
    s = await start_stack(tmp_path, plane_options={"http_host": "0.0.0.0", "http_port": free_port()})
    try:
        await wait_all_acked(s)
        push_rejected_route(s)
        m = await scrape_until(s, 1, "mirrorplane_xds_nacks_total", gateway=GATEWAY, type="routes")
        [(labels, value)] = m.matching("mirrorplane_xds_nack_info").items()
        assert (dict(labels)["type"], dict(labels)["error"], value) == ("routes", NACK_MESSAGE_HIDDEN, 1)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{s.plane.http_port}/metrics") as resp:
            assert NACK_MESSAGE not in await resp.text()
    finally:
        await s.exits.aclose()


async def test_each_control_plane_has_its_own_registry(stack, tmp_path):
    """Two control planes in one process: neither sees the other's metrics, and neither uses
    prometheus_client's global registry."""
    other = ControlPlane(
        FileProvider(LOCAL), xds_host="127.0.0.1", xds_port=free_port(), http_host="127.0.0.1", http_port=free_port()
    )
    async with other:
        mine, theirs = await scrape(stack.plane.http_port), await scrape(other.http_port)
    assert mine.get("mirrorplane_xds_streams", gateway=GATEWAY, type="routes") == 1
    assert theirs.matching("mirrorplane_xds_streams") == {}
    assert theirs.matching("mirrorplane_xds_pushes_total") == {}
    assert theirs.get("mirrorplane_translation_seconds_count") == 1
    assert not any(name.startswith("mirrorplane_") for name in REGISTRY._names_to_collectors)
