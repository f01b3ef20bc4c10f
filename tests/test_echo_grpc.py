"""The gRPC echo (``mirrorplane echo --grpc-port``): a real echo process, called with the real
grpcurl (through server reflection) and with gRPC Python's own client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from admin_support import GRPCURL
from controlplane.echo import run_echo
from controlplane.echo.grpcecho import grpcecho_pb2, grpcecho_pb2_grpc
from controlplane.echo.v1 import streamecho_pb2, streamecho_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
STREAM = "mirrorplane.echo.v1.StreamEcho"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class EchoProcess:
    """``python -m controlplane.echo --grpc-port 0`` and its log lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self.grpc_target = ""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()

    async def line(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        async def scan() -> str:
            while True:
                self._changed.clear()
                for line in self.lines:
                    if predicate(line):
                        return line
                if self._reader.done():
                    raise EOFError("echo exited: " + "\n".join(self.lines))
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def logged_call(self, method: str) -> dict:
        """The JSON log line of the (first) call of ``method``."""
        line = await self.line(lambda text: f'"method": "/{method}"' in text)
        assert line.startswith("[grpc-infra-backend-v1] {"), line
        return json.loads(line.partition(" ")[2])

    async def grpcurl(self, *call: str, flags: tuple[str, ...] = (), data: dict | None = None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of ``grpcurl -plaintext [-d DATA] FLAGS... TARGET CALL...``."""
        if data is not None:
            flags = ("-d", json.dumps(data), *flags)
        proc = await asyncio.create_subprocess_exec(
            str(GRPCURL), "-plaintext", *flags, self.grpc_target, *call,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()


Start = Callable[..., Awaitable[EchoProcess]]


@pytest.fixture
async def start_echo() -> AsyncIterator[Start]:
    started: list[EchoProcess] = []

    async def start(*flags: str) -> EchoProcess:
        env = dict(os.environ, NAMESPACE="gateway-conformance-infra", POD_NAME="grpc-infra-backend-v1-abc-def",
                   SERVICE_NAME="grpc-infra-backend-v1", INGRESS_NAME="gw")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controlplane.echo", "--port", "0", "--grpc-port", "0",
            "--name", "grpc-infra-backend-v1", *flags,
            stdout=asyncio.subprocess.PIPE, cwd=REPO, env=env,
        )
        echo = EchoProcess(proc)
        started.append(echo)
        ready = await echo.line(lambda text: " listening grpc on " in text)
        echo.grpc_target = ready.rpartition(" ")[2]
        await echo.line(lambda text: " listening on " in text)  # printed last: every port is up
        return echo

    yield start
    for echo in started:
        if echo.proc.returncode is None:
            echo.proc.kill()
            await echo.proc.wait()
        echo._reader.cancel()


def _messages(out: str) -> list[dict]:
    """grpcurl prints a stream as JSON objects one after the other."""
    decoder, found, pos = json.JSONDecoder(), [], 0
    while out[pos:].strip():
        pos += len(out[pos:]) - len(out[pos:].lstrip())
        message, pos = decoder.raw_decode(out, pos)
        found.append(message)
    return found


async def test_reflection_lists_the_services(start_echo: Start) -> None:
    echo = await start_echo()
    code, out, err = await echo.grpcurl("list")
    assert code == 0, err
    assert out.split() == [SERVICE, "grpc.reflection.v1alpha.ServerReflection", STREAM]
    code, out, err = await echo.grpcurl("describe", SERVICE)
    assert code == 0, err
    assert "rpc EchoThree" in out


async def test_echo_answers_with_the_calls_assertions_and_logs_it(start_echo: Start) -> None:
    echo = await start_echo()
    flags = ("-H", "x-version: one", "-H", "x-version: two", "-H", "color: blue", "-authority", "grpc.example.com")
    code, out, err = await echo.grpcurl(f"{SERVICE}/Echo", flags=flags)
    assert code == 0, err
    assertions = json.loads(out)["assertions"]
    assert assertions["fully_qualified_method"] == f"/{SERVICE}/Echo"
    assert assertions["authority"] == "grpc.example.com"
    headers = [(h["key"], h["value"]) for h in assertions["headers"]]
    assert (":authority", "grpc.example.com") in headers  # like echo-basic: every metadata entry
    assert [v for k, v in headers if k == "x-version"] == ["one", "two"]
    assert ("color", "blue") in headers
    assert assertions["context"] == {
        "namespace": "gateway-conformance-infra",
        "ingress": "gw",
        "service_name": "grpc-infra-backend-v1",
        "pod": "grpc-infra-backend-v1-abc-def",
    }
    logged = await echo.logged_call(f"{SERVICE}/Echo")
    assert logged["protocol"] == "gRPC"
    assert logged["metadata"][":authority"] == "grpc.example.com"
    assert logged["metadata"]["x-version"] == "one, two"
    assert logged["metadata"]["color"] == "blue"
    assert logged["message"] == {"bytes": 0, "sha256": EMPTY_SHA256}

    code, out, err = await echo.grpcurl(f"{SERVICE}/EchoTwo")
    assert code == 0, err
    assert json.loads(out)["assertions"]["fully_qualified_method"] == f"/{SERVICE}/EchoTwo"


async def test_echo_three_is_unimplemented_but_logged(start_echo: Start) -> None:
    echo = await start_echo()
    code, _, err = await echo.grpcurl(f"{SERVICE}/EchoThree")
    assert code != 0
    assert "Code: Unimplemented" in err, err
    await echo.logged_call(f"{SERVICE}/EchoThree")  # a mirror of it is visible too


async def test_status_flag_answers_the_mapped_grpc_code(start_echo: Start) -> None:
    echo = await start_echo("--status", "500")
    code, _, err = await echo.grpcurl(f"{SERVICE}/Echo")
    assert code != 0
    assert "Code: Internal" in err, err
    await echo.logged_call(f"{SERVICE}/Echo")


async def test_server_stream_sends_count_messages_and_logs_the_request_digest(start_echo: Start) -> None:
    echo = await start_echo()
    data: dict[str, Any] = {"message": "mirror me", "count": 3}
    code, out, err = await echo.grpcurl(f"{STREAM}/ServerStream", data=data)
    assert code == 0, err
    messages = _messages(out)
    assert [m.get("index", 0) for m in messages] == [0, 1, 2]  # JSON leaves out the zero
    assert {m["message"] for m in messages} == {"mirror me"}
    assert {m["pod"] for m in messages} == {"grpc-infra-backend-v1-abc-def"}
    wire = streamecho_pb2.StreamRequest(**data).SerializeToString()
    logged = await echo.logged_call(f"{STREAM}/ServerStream")
    assert logged["message"] == {"bytes": len(wire), "sha256": hashlib.sha256(wire).hexdigest()}

    code, _, err = await echo.grpcurl(f"{STREAM}/ServerStream", data={"count": 1001})
    assert code != 0 and "Code: InvalidArgument" in err, err


async def test_a_delayed_call_does_not_hold_the_process_at_sigterm(start_echo: Start) -> None:
    echo = await start_echo("--delay", "1h")
    client = asyncio.create_task(echo.grpcurl(f"{SERVICE}/Echo"))
    await echo.logged_call(f"{SERVICE}/Echo")  # the call is in, sleeping through its delay
    assert not client.done()
    echo.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(echo.proc.wait(), 30) == 0
    code, _, err = await client
    assert code != 0, "the delayed call must not have been answered"


async def test_a_busy_grpc_port_is_a_one_line_error(start_echo: Start) -> None:
    echo = await start_echo()
    port = echo.grpc_target.rpartition(":")[2]
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.echo", "--port", "0", "--grpc-port", port, "--name", "busy",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        _, err = await asyncio.wait_for(second.communicate(), 30)
    finally:
        if second.returncode is None:  # it served the busy port: the failure this test is about
            second.kill()
            await second.wait()
    assert second.returncode == 1
    assert f"[busy] error: gRPC port 127.0.0.1:{port}: " in err.decode()


async def test_in_process_with_python_clients_and_binary_metadata() -> None:
    """run_echo in this event loop: the log lines of the server's threads reach the loop's sink."""
    lines: list[str] = []
    changed = asyncio.Event()

    class Sink:
        def write(self, text: str) -> None:
            lines.extend(text.splitlines())
            changed.set()

        def flush(self) -> None:
            pass

    async def wait_line(pattern: str) -> str:
        while not any(re.search(pattern, line) for line in lines):
            changed.clear()
            await asyncio.wait_for(changed.wait(), 30)
        return next(line for line in lines if re.search(pattern, line))

    server = asyncio.create_task(run_echo(0, "v2", grpc_port=0, out=Sink(), pod="v2-pod"))
    try:
        port = int((await wait_line(r"listening grpc on")).rpartition(":")[2])
        await wait_line(r"listening on")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await grpcecho_pb2_grpc.GrpcEchoStub(channel).Echo(
                grpcecho_pb2.EchoRequest(), metadata=(("trace-bin", b"\x00\xff"),)
            )
            stream = streamecho_pb2_grpc.StreamEchoStub(channel).ServerStream(
                streamecho_pb2.StreamRequest(message="x", count=2)
            )
            indexes = [m.index async for m in stream]
        assert reply.assertions.context.pod == "v2-pod"
        assert ("trace-bin", "AP8=") in [(h.key, h.value) for h in reply.assertions.headers]
        assert indexes == [0, 1]
        logged = json.loads((await wait_line(r'"method": "/[^"]*/Echo"')).partition(" ")[2])
        assert logged["metadata"]["trace-bin"] == "AP8="
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
