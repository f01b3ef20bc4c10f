"""Loading is bounded, robust, off the event loop and incremental (docs/loading.md).

Hostile files (deep nesting, alias bombs, binary, bad encodings) are rejected alone, named, and
never stop the watcher; a provider that stops anyway is restarted while health says not ready;
a large folder loads while health, ADS and admin keep answering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi.store import Store
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from e2e import GATEWAY, LOCAL, Stack, copy_local
from support import free_port, wait_until
from test_cli import MIRRORPLANE, Proc

DEEP = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: deep, namespace: server}\nspec:\n  x: "
    + "[" * 5000
    + "]" * 5000
    + "\n"
)
# 544 bytes that expand to 10^9 strings: accepted by main in a Service (open fields).
LAUGHS = (
    "apiVersion: v1\nkind: Secret\nmetadata: {name: lol, namespace: server}\ndata:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
    + "".join(f"  {chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
)
SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: server}}
spec:
  ports: [{{port: 8080}}]
---
"""


async def test_a_deeply_nested_file_is_rejected_alone_and_later_edits_still_apply(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mirrorplane.files")
    stack.write("deep.yaml", DEEP)
    await wait_until(lambda: stack.file_errors("deep.yaml"), message="the deep file being reported")
    assert "nesting depth" in stack.file_errors("deep.yaml")[0] or "nested deeper" in stack.file_errors("deep.yaml")[0]
    assert any("deep.yaml" in r.getMessage() and "file.invalid" in r.getMessage() for r in caplog.records)
    # The watcher is alive: deleting the mirror filter still stops mirroring.
    route = (stack.dir / "route.yaml").read_text()
    stack.write("route.yaml", re.sub(r"    filters:\n(?:    - .*\n|      .*\n)+", "", route))
    await wait_until(lambda: _no_mirror(stack), message="the edit after the deep file taking effect")


async def _no_mirror(stack: Stack) -> bool:
    return not await stack.mirror_policies()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("deep.yaml", DEEP.encode(), "nesting depth"),
        ("laughs.yaml", LAUGHS.encode(), "nodes once aliases are expanded"),
        ("garbage.yaml", bytes(range(256)) * 8, "not UTF-8 text"),
        (
            "latin1.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: café}\n".encode("latin-1"),
            "not UTF-8 text: byte 49",
        ),
        ("nul.yaml", b"apiVersion: v1\x00\n", "YAML does not parse"),
        ("big.yaml", b"# padding\n" * 900_000, "larger than 8388608 bytes"),
    ],
)
def test_translate_exits_1_naming_a_rejected_file(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    import subprocess

    folder = tmp_path / "in"
    shutil.copytree(LOCAL, folder)
    (folder / name).write_bytes(data)
    done = subprocess.run([*MIRRORPLANE, "translate", str(folder)], capture_output=True, timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert re.search(rf"^mirrorplane: {re.escape(name)}: file: .*{re.escape(reason)}", stderr, re.M), stderr
    assert "Traceback" not in stderr


def test_utf16_and_bom_files_are_read(tmp_path: Path) -> None:
    import subprocess

    folder = tmp_path / "in"
    shutil.copytree(LOCAL, folder)
    for name, codec in (("gateway.yaml", "utf-16"), ("route.yaml", "utf-8-sig")):
        (folder / name).write_bytes((LOCAL / name).read_text().encode(codec))
    done = subprocess.run([*MIRRORPLANE, "translate", str(folder)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert b"request_mirror_policies" in done.stdout


def test_an_alias_bomb_stays_small_in_memory(tmp_path: Path) -> None:
    """main: 544 bytes took the process from 190 MB to 1.25 GB. Peak RSS of `translate` (VmHWM:
    unlike ru_maxrss, it starts afresh at exec instead of counting the forked pytest process)."""
    import subprocess

    folder = tmp_path / "in"
    shutil.copytree(LOCAL, folder)
    (folder / "laughs.yaml").write_text(LAUGHS.replace("data:", "spec:").replace("kind: Secret", "kind: Service"))
    code = (
        "import re, sys; from controlplane.cli import main; rc = main(['translate', sys.argv[1]]);"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=300)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    peak_kib = int(done.stderr.decode().strip().splitlines()[-1])
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib // 1024} MiB"


async def _grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return reply.status


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        return resp.status


async def test_health_answers_while_a_large_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    shutil.copytree(LOCAL, folder)
    for f in range(8):
        (folder / f"services-{f}.yaml").write_text("".join(SERVICE.format(i=f * 1000 + i) for i in range(1000)))
    xds, http = free_port(), free_port()
    provider = FileProvider(folder)
    plane = ControlPlane(provider, xds_host="127.0.0.1", xds_port=xds, http_host="127.0.0.1", http_port=http)
    starting = asyncio.create_task(plane.start())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            # main loaded everything before listening: nothing answered until it was done.
            await wait_until(
                lambda: _get(session, f"http://127.0.0.1:{http}/healthz"), timeout=5, message="/healthz answering"
            )
            assert not starting.done(), "the folder is still loading"
            assert await _get(session, f"http://127.0.0.1:{http}/readyz") == 503
            assert await _grpc_health(xds) == health_pb2.HealthCheckResponse.NOT_SERVING
            answered = 0
            while not starting.done():
                assert await _get(session, f"http://127.0.0.1:{http}/healthz") == 200  # each within 2 s
                answered += 1
            await starting
            assert answered >= 2
            assert len(plane.controller.statuses) > 0 and len(provider.store().services) >= 8000
            assert await _get(session, f"http://127.0.0.1:{http}/readyz") == 200
            assert await _grpc_health(xds) == health_pb2.HealthCheckResponse.SERVING
    finally:
        if not starting.done():
            starting.cancel()
        await plane.stop()


class StopsOnce(FileProvider):
    """A file provider whose first watch fails, and whose restart waits for the test's go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.go = asyncio.Event()
        self.watches = 0

    async def start(self) -> Store:
        if self.watches:
            await self.go.wait()
        return await super().start()

    async def watch(self, on_change: Any) -> None:
        self.watches += 1
        if self.watches == 1:
            raise RuntimeError("the watcher broke")
        await super().watch(on_change)


async def test_a_stopped_provider_is_restarted_and_not_ready_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mirrorplane.provider")
    folder = copy_local(tmp_path / "local", gateway_port=free_port(), pipy_port=free_port(), mirror_port=free_port())
    provider = StopsOnce(folder)
    xds, http = free_port(), free_port()
    plane = ControlPlane(provider, xds_host="127.0.0.1", xds_port=xds, http_host="127.0.0.1", http_port=http)
    plane.supervisor.backoff = (0.05, 0.1)
    await plane.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            ready = f"http://127.0.0.1:{http}/readyz"
            await wait_until(
                lambda: provider.watches == 1 and plane.supervisor.restarts == 1, message="the watch failing"
            )
            assert await _get(session, ready) == 503
            assert await _grpc_health(xds) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert any(
                "provider.stopped" in r.getMessage() and "the watcher broke" in (r.exc_text or "")
                for r in caplog.records
            )
            (folder / "route.yaml").write_text(
                (folder / "route.yaml").read_text().replace("http-route-sample", "renamed")
            )
            provider.go.set()
            await wait_until(lambda: _status_is(_get(session, ready), 200), message="ready again after the restart")
            assert await _grpc_health(xds) == health_pb2.HealthCheckResponse.SERVING
            assert ("HTTPRoute", "server", "renamed") in plane.controller.statuses, "what changed while down is read"
            (folder / "route.yaml").write_text((folder / "route.yaml").read_text().replace("renamed", "again"))
            await wait_until(
                lambda: ("HTTPRoute", "server", "again") in plane.controller.statuses, message="the restarted watch"
            )
    finally:
        await plane.stop()


async def _status_is(status: Any, expected: int) -> bool:
    return await status == expected


async def test_a_burst_of_writes_is_one_update(tmp_path: Path) -> None:
    folder = tmp_path / "burst"
    shutil.copytree(LOCAL, folder)
    provider = FileProvider(folder, settle_ms=300)
    await provider.start()
    stores: list[Store] = []
    watching = asyncio.create_task(provider.watch(stores.append))
    try:
        await asyncio.wait_for(provider.watching.wait(), 30)

        def burst() -> None:  # an editor saving ten files, 20 ms apart
            import time

            for i in range(10):
                (folder / f"svc-{i}.yaml").write_text(SERVICE.format(i=i))
                time.sleep(0.02)

        await asyncio.to_thread(burst)
        await wait_until(lambda: stores and len(stores[-1].services) == 12, message="the burst arriving")
        # A later write is a later update: anything the burst still had in flight would show up
        # before it, so the updates seen are exactly the burst's and this one's.
        (folder / "svc-last.yaml").write_text(SERVICE.format(i="last"))
        await wait_until(lambda: len(stores[-1].services) == 13, message="the write after the burst")
        assert [len(s.services) for s in stores] == [12, 13]
    finally:
        watching.cancel()


ROUTE_TO = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: checkout-{i}, namespace: server}}
spec:
  parentRefs: [{{name: simple-gateway}}]
  hostnames: [checkout-{i}.example.com]
  rules: [{{backendRefs: [{{name: svc-{i}, port: 8080}}]}}]
"""


async def test_a_checkout_across_files_reaches_the_gateway_as_one_snapshot(tmp_path: Path) -> None:
    """A `git checkout` writes many files at once: here ten HTTPRoutes, each in its own file,
    and the Services they route to in ten others. Read file by file, Envoy would get versions
    with some of the routes, or routes whose Service is not there yet (a 500). The Gateway's
    snapshot must change once. (The window is widened from its default for a loaded machine.)"""
    folder = copy_local(tmp_path / "local", gateway_port=free_port(), pipy_port=free_port(), mirror_port=free_port())
    provider = FileProvider(folder, settle_ms=300)
    plane = ControlPlane(provider, xds_port=free_port(), http_port=None)
    await plane.start()
    try:
        versions = [plane.cache[GATEWAY].version]
        routes: list[int] = []  # HTTPRoutes of the checkout in each new version's input

        def record(*_: object) -> None:
            if plane.cache[GATEWAY].version != versions[-1]:
                versions.append(plane.cache[GATEWAY].version)
                served = plane.controller.last_input
                assert served is not None
                routes.append(sum(("server", f"checkout-{i}") in served.httproutes for i in range(11)))

        plane.controller.update_listeners.append(record)
        await asyncio.wait_for(provider.watching.wait(), 30)

        def checkout() -> None:
            for i in range(10):
                (folder / f"route-{i}.yaml").write_text(ROUTE_TO.format(i=i))
                (folder / f"svc-{i}.yaml").write_text(SERVICE.format(i=i))

        await asyncio.to_thread(checkout)
        await wait_until(lambda: len(versions) > 1, message="the checkout being served")
        # A later write is a later version: anything the checkout still had in flight would show
        # up before it, so the versions seen are exactly the checkout's and this one's.
        (folder / "route-10.yaml").write_text(ROUTE_TO.format(i=10) + "---\n" + SERVICE.format(i=10))
        await wait_until(lambda: routes[-1] == 11, message="the write after the checkout")
        assert routes == [10, 11], routes
    finally:
        await plane.stop()


def test_a_document_repeated_past_the_node_limit_is_rejected() -> None:
    """Equal chunks are read once, but each copy counts against the file's limit."""
    from controlplane.providers.files import parse_text
    from controlplane.providers.yamlread import Limits

    objects, errors = parse_text(SERVICE.format(i=1) * 20, "repeated.yaml", limits=Limits(max_nodes=100))
    assert [e.message for e in errors] == ["rejected: more than 100 nodes once aliases are expanded"]
    assert not objects


def test_two_million_empty_documents_are_few_chunks_and_rejected() -> None:
    from controlplane.providers import yamlread
    from controlplane.providers.files import parse_text

    text = "---\n" * 2_000_000
    assert len(yamlread.chunks(text)) <= yamlread.MAX_CHUNKS
    _, errors = parse_text(text, "empty.yaml")
    assert [e.message for e in errors] == ["rejected: more than 1000000 nodes once aliases are expanded"]


def test_unchanged_documents_are_not_validated_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.gatewayapi import schema

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "many.yaml").write_text("".join(SERVICE.format(i=i) for i in range(50)))
    provider = FileProvider(folder)
    provider.load()
    validated: list[str] = []
    real = schema.validate

    def validate(body: dict[str, Any]) -> dict[str, Any]:
        validated.append(body["metadata"]["name"])
        return real(body)

    monkeypatch.setattr(schema, "validate", validate)
    (folder / "many.yaml").write_text("".join(SERVICE.format(i=i) for i in range(50)).replace("svc-7,", "svc-seven,"))
    store = provider.load()
    assert validated == ["svc-seven"]
    assert ("server", "svc-seven") in store.services and ("server", "svc-7") not in store.services


@pytest.fixture
async def readme_demo(tmp_path: Path) -> AsyncIterator[tuple[Proc, dict[str, int], Path]]:
    """`make run` as a user runs it: `mirrorplane run manifests/local` with a RELATIVE folder,
    from a temp copy (ports moved to free ones) with the working directory set."""
    ports = {name: free_port() for name in ("gateway", "pipy", "mirror", "xds", "http", "admin")}
    copy_local(
        tmp_path / "manifests" / "local",
        gateway_port=ports["gateway"],
        pipy_port=ports["pipy"],
        mirror_port=ports["mirror"],
    )
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, "run", "manifests/local",
        "--xds-port", str(ports["xds"]), "--http-port", str(ports["http"]), "--admin-port", str(ports["admin"]),
        "--echo", f"pipy={ports['pipy']}", "--echo", f"pipy-mirror={ports['mirror']}",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    p = Proc(proc)
    try:
        yield p, ports, tmp_path / "manifests" / "local"
    finally:
        await p.stop(signal.SIGKILL)


async def test_readme_demo_from_a_relative_folder_stops_and_restarts_mirroring(
    readme_demo: tuple[Proc, dict[str, int], Path],
) -> None:
    proc, ports, folder = readme_demo
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        sent = 0
        since = 1  # the first probe of the current phase

        async def probe() -> bool:
            """One request through Envoy; True when the primary answered it."""
            nonlocal sent
            sent += 1
            try:
                async with session.post(
                    f"http://127.0.0.1:{ports['gateway']}/probe-{sent}", data=b"Hello world"
                ) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        def mirror_saw(k: int) -> bool:
            return proc.saw(f"[pipy-mirror] Echoing back request made to /probe-{k} ")

        async def mirrored() -> bool:
            # The mirror's copy may log after the primary answered: a probe of this phase seen
            # by the mirror at any later round counts.
            await probe()
            return any(mirror_saw(k) for k in range(since, sent + 1))

        await wait_until(mirrored, timeout=30, message="the quick start mirroring")
        route = folder / "route.yaml"
        original = route.read_text()
        route.write_text(
            re.sub(r"    filters:\n(?:    - .*\n|      .*\n)+", "", original)
        )  # "delete the filters: block and save"

        async def not_mirrored() -> bool:
            # Absence has no event to wait on: a copy not logged 0.2 s after its primary answered
            # was not sent (it is sent beside the primary's request), and a later round retries.
            if not await probe():
                return False
            await asyncio.sleep(0.2)
            return not mirror_saw(sent)

        await wait_until(not_mirrored, timeout=10, message="mirroring stopping after the edit")
        route.write_text(original)  # "put it back"
        since = sent + 1
        await wait_until(mirrored, timeout=10, message="mirroring starting again")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _read_in_chunks(text: str) -> list[Any]:
    from controlplane.providers import yamlread

    return [doc for c in yamlread.chunks(text) for doc in yamlread.load(c, text)[1]]


@settings(max_examples=100, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=6), st.booleans())
def test_a_file_read_in_chunks_is_what_reading_it_whole_gives(docs: list[Any], explicit_end: bool) -> None:
    """The document cache rests on this: each chunk of the file, loaded alone, gives the
    documents the whole file gives there."""
    import yaml

    assert _read_in_chunks(yaml.safe_dump_all(docs, explicit_end=explicit_end)) == docs


# Lines that put a "---" (or a directive) where a naive cut would go wrong: in scalars of every
# style, in flow collections, after an unterminated quote, with anchors, tags and merge keys.
_TRICKY_LINES = [
    "---", "--- ", "--- |", "--- >-", "--- &x [1]", "---x", " ---", "----", "--- # c", "...", "... ", "....",
    "%YAML 1.1", "%TAG !e! tag:yaml.org,2002:", "x: !e!str 5", "% not a directive", "a: 1", "b: [1, 2", "]", "c: 'x", "y'",
    'd: "p', 'q"', "- item", "  - nested", "e: |", "  text", "text", "  ---", "f: &a {k: v}", "g: *a", "#---",
    "# c", "", "h: >", "  folded", "i: !!str 5", "j: !!binary aGVsbG8=", "k: 2001-12-14", "<<: *a", "? key",
    ": value", "l: {m: n,", "o: p}", "plain", "  continued", "\ufeff---", "- |", "   ---", "z: --- x",
    # Plain scalars PyYAML resolves to something else than a string, keys that are not strings.
    "n: null", "n: ~", "b: yes", "b: On", "i: 0x1F", "i: 1_000", "i: 0o17", "i: 190:20:30", "f: 1e3", "f: .inf",
    "t: 2001-12-14t21:59:43.10-05:00", "e:", "v: =", "5: int key", "[a, b]: c", "{a: 1}: b", "- - x", "w: !", "- *a",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_TRICKY_LINES), max_size=12),
    st.sampled_from(["\n", "\r\n", "\r", "\x85", "\u2028"]),
)
def test_any_text_read_in_chunks_reads_or_fails_as_a_whole(lines: list[str], newline: str) -> None:
    """Whatever the text, reading it chunk by chunk gives the same documents as reading it
    whole, or both fail."""
    import yaml

    from controlplane.providers import yamlread

    text = newline.join(lines)
    try:
        whole: Any = list(yaml.load_all(text, Loader=yamlread.Loader))
    except yaml.YAMLError:
        whole = "fails"
    for most in (yamlread.MAX_CHUNKS, 2):  # 2: chunks of several documents, as in a huge file
        with mock.patch.object(yamlread, "MAX_CHUNKS", most):
            try:
                chunked: Any = _read_in_chunks(text)
            except (yaml.YAMLError, yamlread.RejectedError):
                chunked = "fails"
            assert chunked == whole, yamlread.chunks(text)


async def test_serve_starts_with_a_hostile_file_and_names_it(tmp_path: Path) -> None:
    """main: `serve` exited with a RecursionError traceback that named no file."""
    folder = copy_local(tmp_path / "local", gateway_port=free_port(), pipy_port=free_port(), mirror_port=free_port())
    (folder / "deep.yaml").write_text(DEEP)
    http = free_port()
    proc = Proc(
        await asyncio.create_subprocess_exec(
            *MIRRORPLANE, "serve", str(folder), "--xds-port", str(free_port()), "--http-port", str(http),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def ready() -> bool:
                assert proc.proc.returncode is None, "\n".join(proc.lines)
                try:
                    return await _get(session, f"http://127.0.0.1:{http}/readyz") == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30, message="serve ready despite deep.yaml")
        assert proc.saw("file.invalid") and proc.saw("deep.yaml"), "\n".join(proc.lines)
        assert not proc.saw("Traceback")
    finally:
        await proc.stop()
