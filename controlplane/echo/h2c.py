"""The echo server's h2c port: HTTP/2 over cleartext with prior knowledge.

Why a second port: echo-basic serves h2c on ``H2C_PORT`` (3001) beside HTTP/1.1 on 3000, and the
conformance fixture's Service maps its ``kubernetes.io/h2c`` port there; Envoy then talks HTTP/2
to it without any upgrade. aiohttp has no HTTP/2 server, so this is a small protocol on the ``h2``
state machine that answers with the very same JSON and log lines as the HTTP/1.1 side (both
through ``controlplane.echo.common``). Like echo-basic, a request that is not HTTP/2 gets a 400;
the deprecated ``Upgrade: h2c`` dance is not offered (RFC 9113 removed it and conformance does
not use it).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError

from .common import Echo, echo_set_headers, echoing_line, head_line, parse_go_duration

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_NOT_H2 = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    b"Content-Length: 36\r\n\r\nthis port only speaks h2c (HTTP/2)\r\n"
)


class H2CProtocol(asyncio.Protocol):
    """One client connection; every stream is answered by its own task (``?delay=`` must not block)."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.conn: H2Connection | None = None
        self.transport: asyncio.Transport | None = None
        self._pending = b""
        self._streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server's transport
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.conn is None:
            self._pending += data
            if PREFACE.startswith(self._pending):
                return  # the preface is still arriving
            if not self._pending.startswith(PREFACE):
                self.transport.write(_NOT_H2)
                self.transport.close()
                return
            self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
            self.conn.initiate_connection()
            data, self._pending = self._pending, b""
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                # header_encoding="utf-8" makes h2 hand over str pairs; its Header type says bytes | str.
                self._streams[event.stream_id] = (list(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                self._streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                headers, body = self._streams.pop(event.stream_id)
                task = asyncio.ensure_future(self._answer(event.stream_id, headers, bytes(body)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(event, StreamReset):
                self._streams.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self._flush()

    def _flush(self) -> None:
        if self.conn is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    async def _answer(self, stream_id: int, headers: list[tuple[str, str]], body: bytes) -> None:
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        regular = [(k, v) for k, v in headers if not k.startswith(":")]
        raw_path = pseudo.get(":path", "/")
        method = pseudo.get(":method", "GET")
        peer = self.transport.get_extra_info("peername") if self.transport else None
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        sock = self.transport.get_extra_info("sockname") if self.transport else None
        head = head_line("HTTP/2.0", method, raw_path, dict(regular), body)
        self.echo.emit(head, echoing_line(raw_path, remote))
        delay = parse_qs(urlsplit(raw_path).query).get("delay", [""])[0]
        status, extra = 200, echo_set_headers([v for k, v in regular if k == "x-echo-set-header"])
        try:
            if delay:
                await asyncio.sleep(max(parse_go_duration(delay), 0))
            payload = self.echo.assertions(
                method=method,
                raw_path=raw_path,
                host=pseudo.get(":authority", ""),
                proto="HTTP/2.0",
                headers=regular,
                port=sock[1] if isinstance(sock, tuple) else 0,
            )
            out = json.dumps(payload, indent=1).encode()
        except ValueError as exc:
            status, out = 500, json.dumps({"message": str(exc)}).encode()
        self._respond(stream_id, status, extra, out)

    def _respond(self, stream_id: int, status: int, extra: list[tuple[str, str]], body: bytes) -> None:
        conn = self.conn
        if conn is None or self.transport is None or self.transport.is_closing():
            return
        headers = [(":status", str(status))] + [(k.lower(), v) for k, v in extra]
        headers += [("content-type", "application/json"), ("x-content-type-options", "nosniff")]
        headers.append(("content-length", str(len(body))))
        try:
            conn.send_headers(stream_id, headers)
            step = conn.max_outbound_frame_size
            chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
            for i, chunk in enumerate(chunks):
                conn.send_data(stream_id, chunk, end_stream=i == len(chunks) - 1)
        except ProtocolError:
            return  # the client reset the stream meanwhile
        self._flush()


async def serve_h2c(echo: Echo, host: str, port: int) -> asyncio.Server:
    """Start the h2c listener (port 0 = any free port; read it from ``sockets``)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: H2CProtocol(echo), host, port)
