"""Tests for controlplane.echo: a real server on loopback, real HTTP via aiohttp."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from controlplane.echo import (
    add_arguments,
    build_app,
    canonical_header_key,
    main_from_args,
    parse_go_duration,
    run_echo,
)
from controlplane.echo.http import SHUTDOWN_TIMEOUT
from support import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = aiohttp.ClientTimeout(total=15)


class LineSink(io.StringIO):
    """StringIO that wakes waiters whenever something is written."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self._changed.set()
        return n

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()

    async def wait_for(self, predicate, timeout: float = 5.0) -> list[str]:
        async def _loop() -> list[str]:
            while True:
                self._changed.clear()
                lines = self.lines()
                if predicate(lines):
                    return lines
                await self._changed.wait()

        return await asyncio.wait_for(_loop(), timeout)


@dataclass
class Server:
    url: str
    port: int
    out: LineSink

    def u(self, path: str) -> URL:
        # encoded=True: keep "//" and query strings byte-for-byte.
        return URL(self.url + path, encoded=True)


async def _start(**options) -> tuple[web.AppRunner, Server]:
    out = LineSink()
    app = build_app(out=out, **options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)  # no wait for a ?delay=
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, Server(url=f"http://127.0.0.1:{port}", port=port, out=out)


async def raw_request(port: int, request: bytes) -> tuple[int, bytes, int]:
    """Send one raw HTTP/1.1 request (with ``Connection: close``); return status, body, client port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body, client_port


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    runner, srv = await _start(
        name="pipy", namespace="gateway-conformance-infra", pod="pipy-abcde", service="pipy-svc", ingress="gw"
    )
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        yield s


# ---------------------------------------------------------------------------
# Body echo (pipy seed behaviour)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"Hello world", id="text"),
        pytest.param(bytes(range(256)) * 4, id="binary"),
        pytest.param(os.urandom(1024 * 1024), id="1MiB"),
    ],
)
async def test_post_echoes_body_bytes_exact(server: Server, session: aiohttp.ClientSession, body: bytes) -> None:
    async with session.post(server.u("/"), data=body, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
        assert await resp.read() == body
        assert resp.headers["Content-Type"] == "application/octet-stream"


async def test_post_keeps_request_content_type(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.post(
        server.u("/submit"), data=b'{"a": 1}', headers={"Content-Type": "application/vnd.test+json; charset=utf-8"}
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == b'{"a": 1}'
        assert resp.headers["Content-Type"] == "application/vnd.test+json; charset=utf-8"


# ---------------------------------------------------------------------------
# JSON echo (echo-basic behaviour)
# ---------------------------------------------------------------------------


async def test_get_returns_request_assertions_json(server: Server, session: aiohttp.ClientSession) -> None:
    headers = {"x-forwarded-for": "10.0.0.1", "X-MULTI": "a", "Host": "example.com"}
    async with session.get(server.u("/some/path?x=1&y=two"), headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        raw = await resp.text()
    data = json.loads(raw)
    assert raw.startswith('{\n "path"')  # indented like Go's MarshalIndent
    assert data["path"] == "/some/path?x=1&y=two"
    assert data["host"] == "example.com"
    assert data["method"] == "GET"
    assert data["proto"] == "HTTP/1.1"
    assert data["headers"]["X-Forwarded-For"] == ["10.0.0.1"]
    assert data["headers"]["X-Multi"] == ["a"]
    assert "Host" not in data["headers"]  # Go moves Host out of Request.Header
    assert all(isinstance(v, list) for v in data["headers"].values())
    assert data["namespace"] == "gateway-conformance-infra"
    assert data["pod"] == "pipy-abcde"
    assert data["service"] == "pipy-svc"
    assert data["ingress"] == "gw"
    assert data["httpPort"] == str(server.port)
    assert list(data)[:9] == ["path", "host", "method", "proto", "headers", "namespace", "ingress", "service", "pod"]


async def test_repeated_request_headers_are_listed(server: Server) -> None:
    # aiohttp's client folds repeated headers, so speak HTTP/1.1 by hand here.
    status, body, _ = await raw_request(
        server.port,
        b"GET /dup HTTP/1.1\r\nHost: h\r\nx-dup: one\r\nX-Dup: two\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    data = json.loads(body)
    assert data["headers"]["X-Dup"] == ["one", "two"]
    assert data["host"] == "h"


async def test_other_methods_are_reported(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.delete(server.u("/thing/1")) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["method"] == "DELETE"
    assert data["path"] == "/thing/1"


# ---------------------------------------------------------------------------
# Log lines
# ---------------------------------------------------------------------------


async def test_log_lines_per_request_in_order(server: Server) -> None:
    # Raw socket: we need our own client port to check "(ip:port)" exactly.
    status, body, client_port = await raw_request(
        server.port,
        b"POST /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Trace: T1\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi" % server.port,
    )
    assert (status, body) == (200, b"hi")
    lines = server.out.lines()
    assert len(lines) == 2, lines
    head_line, echo_line = lines
    assert head_line.startswith("[pipy] {")
    head = json.loads(head_line[len("[pipy] ") :])
    assert list(head) == ["protocol", "method", "path", "headers", "body"]
    assert head["body"] == {"bytes": 2, "sha256": hashlib.sha256(b"hi").hexdigest()}
    assert head["protocol"] == "HTTP/1.1"
    assert head["method"] == "POST"
    assert head["path"] == "/x?y=1"
    assert head["headers"]["x-trace"] == "T1"
    assert head["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert all(k == k.lower() for k in head["headers"])
    assert echo_line == f"[pipy] Echoing back request made to /x?y=1 to client (127.0.0.1:{client_port})"
    # What the conformance suite greps for (unanchored, so the prefix is fine).
    assert re.search(re.escape("Echoing back request made to /x?y=1 to client"), echo_line)


async def test_log_lines_stay_paired_under_concurrency(server: Server, session: aiohttp.ClientSession) -> None:
    async def one(i: int) -> None:
        async with session.get(server.u(f"/c{i}")) as resp:
            assert resp.status == 200
            await resp.read()

    await asyncio.gather(*(one(i) for i in range(20)))
    lines = server.out.lines()
    assert len(lines) == 40
    for head_line, echo_line in zip(lines[0::2], lines[1::2], strict=True):
        path = json.loads(head_line[len("[pipy] ") :])["path"]
        assert echo_line.startswith(f"[pipy] Echoing back request made to {path} to client (127.0.0.1:")


async def test_health_and_status_log_head_only(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.get(server.u("/health")) as resp:
        assert await resp.text() == "OK"
    lines = server.out.lines()
    assert len(lines) == 1
    assert json.loads(lines[0][len("[pipy] ") :])["path"] == "/health"


# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------


async def test_health(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.get(server.u("/health")) as resp:
        assert resp.status == 200
        assert await resp.text() == "OK"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/status/418", 418), ("/status/503", 503), ("/status/204", 204), ("/status/abc", 400), ("/status/4181", 400)],
)
async def test_status(server: Server, session: aiohttp.ClientSession, path: str, code: int) -> None:
    async with session.get(server.u(path)) as resp:
        assert resp.status == code
        assert await resp.read() == b""


async def test_double_slashes_are_collapsed_for_routing(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.get(server.u("//health")) as resp:
        assert resp.status == 200
        assert await resp.text() == "OK"
    async with session.get(server.u("//status//418")) as resp:
        assert resp.status == 418
    async with session.get(server.u("//a//b?q=1")) as resp:
        assert resp.status == 200
        data = await resp.json()
    # Routing uses the collapsed path; RequestURI is reported as received.
    assert data["path"] == "//a//b?q=1"
    assert server.out.lines()[-1].startswith("[pipy] Echoing back request made to //a//b?q=1 to client (")


# ---------------------------------------------------------------------------
# Delays and overrides
# ---------------------------------------------------------------------------


async def test_query_delay(server: Server, session: aiohttp.ClientSession) -> None:
    start = time.monotonic()
    async with session.get(server.u("/slow?delay=200ms")) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert time.monotonic() - start >= 0.2
    assert data["path"] == "/slow?delay=200ms"


async def test_invalid_query_delay_is_json_500(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.get(server.u("/?delay=soon")) as resp:
        assert resp.status == 500
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.json() == {"message": 'time: invalid duration "soon"'}


async def test_server_delay_does_not_serialise_requests(session: aiohttp.ClientSession) -> None:
    runner, srv = await _start(name="mirror", delay=0.5)
    try:

        async def one(path: str) -> float:
            t0 = time.monotonic()
            async with session.get(srv.u(path)) as resp:
                assert resp.status == 200
                await resp.read()
            return time.monotonic() - t0

        # The first request also sleeps through a minute-long ?delay=: the second one, sent once
        # the first has arrived, must be answered while the first is still being served (an event,
        # not a stopwatch; the session's 15 s timeout is the only deadline).
        first = asyncio.create_task(one("/a?delay=60s"))
        await wait_until(lambda: any("/a?delay=60s" in line for line in srv.out.lines()) or first.done(), timeout=30)
        second = await one("/b")
        assert not first.done(), "the second request waited for the first"
        first.cancel()
    finally:
        await runner.cleanup()
    assert second >= 0.5, second


async def test_status_override(session: aiohttp.ClientSession) -> None:
    runner, srv = await _start(name="broken", status=503)
    try:
        async with session.post(srv.u("/"), data=b"payload") as resp:
            assert resp.status == 503
            assert await resp.read() == b"payload"
        async with session.get(srv.u("/q?x=1")) as resp:
            assert resp.status == 503
            assert (await resp.json())["path"] == "/q?x=1"
        async with session.get(srv.u("/health")) as resp:
            assert resp.status == 200  # probes stay truthful
        lines = srv.out.lines()
        assert sum("Echoing back request made to" in line for line in lines) == 2
    finally:
        await runner.cleanup()


async def test_echo_set_header(server: Server, session: aiohttp.ClientSession) -> None:
    headers = {"X-Echo-Set-Header": "X-Foo:bar,X-Camel-CASE:Value, X-Foo:baz"}
    async with session.get(server.u("/"), headers=headers) as resp:
        assert resp.status == 200
        raw = {k.decode(): v.decode() for k, v in resp.raw_headers}
        await resp.read()
    assert raw["X-Foo"] == "bar,baz"
    assert raw["X-Camel-CASE"] == "Value"
    assert raw["Content-Type"] == "application/json"


async def test_echo_set_header_on_body_echo(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.post(server.u("/"), data=b"x", headers={"X-Echo-Set-Header": "X-A:1"}) as resp:
        assert resp.headers["X-A"] == "1"
        assert await resp.read() == b"x"


# ---------------------------------------------------------------------------
# Defaults, helpers and CLI parsing
# ---------------------------------------------------------------------------


async def test_defaults_pod_and_service(session: aiohttp.ClientSession) -> None:
    runner, srv = await _start(name="pipy")
    try:
        async with session.get(srv.u("/")) as resp:
            data = await resp.json()
    finally:
        await runner.cleanup()
    assert re.fullmatch(r"pipy-[a-z0-9]{5}", data["pod"])
    assert data["service"] == "pipy"
    assert data["namespace"] == ""


def test_build_app_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        build_app(name="x", status=42)
    with pytest.raises(ValueError):
        build_app(name="x", delay=-1)
    with pytest.raises(ValueError):
        build_app(name="")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1h2m3s", 3723.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("0", 0.0),
        ("-1s", -1.0),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("7ns", 7e-9),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("2", 'time: missing unit in duration "2"'),
        ("2x", 'time: unknown unit "x" in duration "2x"'),
        ("abc", 'time: invalid duration "abc"'),
        (".s", 'time: invalid duration ".s"'),
    ],
)
def test_parse_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_go_duration(text)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("x-forwarded-for", "X-Forwarded-For"), ("USER-AGENT", "User-Agent"), ("x_y", "X_y"), ("a b", "a b")],
)
def test_canonical_header_key(name: str, canonical: str) -> None:
    assert canonical_header_key(name) == canonical


def test_add_arguments_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "p1")
    monkeypatch.setenv("NAMESPACE", "ns1")
    monkeypatch.setenv("SERVICE_NAME", "svc1")
    monkeypatch.setenv("INGRESS_NAME", "ing1")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "8081", "--name", "pipy", "--delay", "2s", "--status", "503"])
    assert (args.port, args.name, args.host) == (8081, "pipy", "127.0.0.1")
    assert (args.pod, args.namespace, args.service, args.ingress) == ("p1", "ns1", "svc1", "ing1")
    assert args.delay == 2.0
    assert args.status == 503
    assert parser.parse_args(["--port", "1", "--name", "n", "--delay", "0.25"]).delay == 0.25
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "pipy"])  # --port is required
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "1", "--name", "n", "--status", "99"])


# ---------------------------------------------------------------------------
# run_echo and the real process
# ---------------------------------------------------------------------------


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        pytest.param("::1", marks=pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")),
    ],
)
async def test_run_echo_serves_until_cancelled(session: aiohttp.ClientSession, host: str) -> None:
    out = LineSink()
    task = asyncio.create_task(run_echo(0, "pipy", host=host, out=out))
    try:
        lines = await out.wait_for(lambda ls: any("listening on" in line for line in ls))
        m = re.fullmatch(r"\[pipy\] listening on (.+):(\d+)", lines[0])
        assert m is not None, lines
        port = int(m.group(2))
        expected_host = f"[{host}]" if ":" in host else host
        assert m.group(1) == expected_host
        async with session.get(URL(f"http://{expected_host}:{port}/v6?z=1", encoded=True)) as resp:
            assert resp.status == 200
            data = await resp.json()
        assert data["path"] == "/v6?z=1"
        assert data["httpPort"] == str(port)
        echo_line = out.lines()[-1]
        client = r"\[::1\]:\d+" if ":" in host else r"127\.0\.0\.1:\d+"
        assert re.fullmatch(rf"\[pipy\] Echoing back request made to /v6\?z=1 to client \({client}\)", echo_line)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The port is released after cancellation.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def _reset_sigint() -> None:
    # A child spawned from a background job may inherit SIGINT=SIG_IGN, in
    # which case Python (rightly) keeps ignoring Ctrl-C; the test needs the
    # normal interactive behaviour.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _readline(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "echo process closed stdout"
    return line.decode().rstrip("\n")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_module_subprocess(session: aiohttp.ClientSession, sig: signal.Signals) -> None:
    env = dict(os.environ, POD_NAME="pipy-from-env", NAMESPACE="ns-env")
    env.pop("PYTHONUNBUFFERED", None)  # stdout is a pipe: lines must be flushed explicitly
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controlplane.echo",
        "--port",
        "0",
        "--name",
        "pipy",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
        preexec_fn=_reset_sigint,
    )
    try:
        ready = await _readline(proc)
        m = re.fullmatch(r"\[pipy\] listening on 127\.0\.0\.1:(\d+)", ready)
        assert m is not None, ready
        port = int(m.group(1))

        async with session.post(URL(f"http://127.0.0.1:{port}/hello?a=b", encoded=True), data=b"Hello world") as resp:
            assert resp.status == 200
            assert await resp.read() == b"Hello world"
        head_line = await _readline(proc)
        echo_line = await _readline(proc)
        head = json.loads(head_line[len("[pipy] ") :])
        assert head_line.startswith("[pipy] {")
        assert (head["method"], head["path"]) == ("POST", "/hello?a=b")
        assert re.fullmatch(
            r"\[pipy\] Echoing back request made to /hello\?a=b to client \(127\.0\.0\.1:\d+\)", echo_line
        )

        async with session.get(URL(f"http://127.0.0.1:{port}/j", encoded=True)) as resp:
            data = await resp.json()
        assert (data["pod"], data["namespace"], data["service"]) == ("pipy-from-env", "ns-env", "pipy")

        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 10)
        assert rc == 0
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_main_from_args_reports_bind_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        rc = main_from_args(parser.parse_args(["--port", str(port), "--name", "busy"]))
    assert rc == 1
    assert "[busy] error:" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# WebSocket (/ws) and h2c (HTTP/2 cleartext, echo-basic's H2C_PORT)
# ---------------------------------------------------------------------------


async def test_websocket_echoes_text_and_binary_frames(server: Server, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(server.u("/ws")) as ws:
        await ws.send_str("Websocket Support!")
        reply = await ws.receive(timeout=5)
        assert (reply.type, reply.data) == (aiohttp.WSMsgType.TEXT, "Websocket Support!")
        await ws.send_bytes(bytes([1, 2, 3, 4, 5, 6, 7]))
        reply = await ws.receive(timeout=5)
        assert (reply.type, reply.data) == (aiohttp.WSMsgType.BINARY, bytes([1, 2, 3, 4, 5, 6, 7]))
    # A plain GET on /ws is an ordinary echo, as with echo-basic's mux fallthrough for non-upgrades.
    async with session.get(server.u("/ws")) as resp:
        assert resp.status == 200


async def _h2c_echo(out: LineSink, **options) -> tuple[asyncio.Task[None], int, int]:
    task = asyncio.create_task(run_echo(0, "infra-backend-v1", h2c_port=0, out=out, **options))
    lines = await out.wait_for(lambda ls: any(" listening on " in line for line in ls))
    text = "\n".join(lines)
    h2c = re.search(r"listening h2c on 127\.0\.0\.1:(\d+)", text)
    http = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
    assert h2c is not None and http is not None, text
    return task, int(http[1]), int(h2c[1])


async def test_h2c_prior_knowledge_answers_like_http1() -> None:
    import httpx

    out = LineSink()
    task, _, port = await _h2c_echo(out, namespace="ns", pod="infra-backend-v1-abc-def", service="infra-backend-v1")
    try:
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            resp = await client.get(
                f"http://127.0.0.1:{port}/h2?x=1", headers={"X-Echo-Set-Header": "X-Back:yes", "X-Mine": "a"}
            )
            slow = await client.get(f"http://127.0.0.1:{port}/slow?delay=100ms")
        assert resp.http_version == "HTTP/2"
        assert resp.status_code == 200 and resp.headers["x-back"] == "yes"
        data = resp.json()
        assert (data["path"], data["method"], data["proto"]) == ("/h2?x=1", "GET", "HTTP/2.0")
        assert (data["namespace"], data["pod"], data["service"]) == (
            "ns",
            "infra-backend-v1-abc-def",
            "infra-backend-v1",
        )
        assert data["host"] == f"127.0.0.1:{port}" and data["headers"]["X-Mine"] == ["a"]
        assert slow.status_code == 200
        assert any(
            re.search(r"Echoing back request made to /h2\?x=1 to client \(127\.0\.0\.1:\d+\)", line)
            for line in out.lines()
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_h2c_port_refuses_http1(session: aiohttp.ClientSession) -> None:
    out = LineSink()
    task, http_port, h2c_port = await _h2c_echo(out)
    try:
        async with session.get(f"http://127.0.0.1:{h2c_port}/") as resp:
            assert resp.status == 400
        async with session.get(f"http://127.0.0.1:{http_port}/") as resp:  # the HTTP/1.1 port is unchanged
            assert (await resp.json())["proto"] == "HTTP/1.1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_h2c_port_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--port", "1", "--name", "n"]).h2c_port is None
    assert parser.parse_args(["--port", "1", "--name", "n", "--h2c-port", "3001"]).h2c_port == 3001
    monkeypatch.setenv("H2C_PORT", "3001")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--port", "1", "--name", "n"]).h2c_port == 3001


def test_h2c_port_without_the_echo_extra_is_a_one_line_error() -> None:
    """h2 is the `echo` extra: without it `--h2c-port` says what to install, and nothing starts."""
    code = (
        "import sys; sys.modules['h2'] = None; from controlplane.cli import main; "
        "sys.exit(main(['echo', '--port', '0', '--h2c-port', '0', '--name', 'x']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "pip install 'mirrorplane[echo]'" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "listening" not in done.stdout
