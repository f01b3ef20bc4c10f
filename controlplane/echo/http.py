"""The echo backend's HTTP/1.1 side (and WebSocket, and ``--stall``).

It deliberately behaves like two well-known echo servers at once, so that
scripts written for either keep working unchanged:

* the seed scenario's pipy echo
  (``pipy().listen(8080).serveHTTP(msg=>(console.log(msg.head),msg))``):
  every request's head is logged as ONE JSON line on stdout and a request
  body is answered with exactly the same bytes;
* the Gateway API conformance server ``echo-basic``: ``/health``,
  ``/status/NNN``, ``?delay=<go duration>``, ``X-Echo-Set-Header``, the
  ``Echoing back request made to <RequestURI> to client (<RemoteAddr>)`` log
  line (the conformance suite greps pod logs for it to count mirrored
  requests) and the JSON "request assertions" body for requests without body.

Each log line is prefixed with ``[NAME] `` so that several echo servers can
share one terminal in local mode; the conformance regexp is not anchored, so
the prefix does not break it.

Two server-wide knobs exist purely for mirroring tests: ``delay`` (a slow
mirror must not slow down the primary) and ``status`` (an erroring mirror
must not change the client's answer).  ``--stall`` is the worst mirror of
all: it accepts connections and never reads them (docs/mirroring.md).

``mirrorplane echo --port N --name NAME`` runs it (``controlplane.echo.cli``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from .common import Echo, echo_set_headers, echoing_line, head_line, make_config, parse_go_duration

_STATUS_PATH_RE = re.compile(r"^/status/(\d{3})$")
_MULTI_SLASH_RE = re.compile(r"/{2,}")

# Graceful-shutdown budget for in-flight requests.  Short on purpose: local
# mode and tests stop echo servers with Ctrl-C and must not hang on a request
# that is sleeping through a long ``?delay=``.
SHUTDOWN_TIMEOUT = 0.5


def _format_remote_addr(request: web.BaseRequest) -> str:
    """Format the peer like Go's ``Request.RemoteAddr`` (``ip:port``, ``[v6]:port``)."""
    peer: Any = None
    if request.transport is not None:
        peer = request.transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    if isinstance(peer, str) and peer:  # unix socket path
        return peer
    return request.remote or ""


def _local_port(request: web.BaseRequest) -> int:
    """Port the request actually arrived on (handles servers bound to port 0)."""
    if request.transport is not None:
        sock = request.transport.get_extra_info("sockname")
        if isinstance(sock, (tuple, list)) and len(sock) >= 2:
            return int(sock[1])
    return 0


def _decode(raw: bytes) -> str:
    # HTTP header bytes are not guaranteed UTF-8; never fail on them.
    return raw.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# Application
# ---------------------------------------------------------------------------


class _EchoServer:
    """Request handling; one instance per application."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.config = echo.config

    def _head_line(self, request: web.BaseRequest, body: bytes = b"") -> str:
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.raw_headers:
            key = _decode(raw_name).lower()
            value = _decode(raw_value)
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        protocol = f"HTTP/{request.version.major}.{request.version.minor}"
        return head_line(protocol, request.method, request.raw_path, headers, body)

    def _echoing_line(self, request: web.BaseRequest) -> str:
        return echoing_line(request.raw_path, _format_remote_addr(request))

    # -- responses --------------------------------------------------------

    @staticmethod
    def _error(message: str, status: int = 500) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps({"message": message}).encode(),
            headers={"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"},
        )

    @staticmethod
    def _echo_set_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
        return echo_set_headers(request.headers.getall("X-Echo-Set-Header", []))

    def _assertions(self, request: web.BaseRequest) -> dict[str, Any]:
        """echo-basic's RequestAssertions JSON (plus ``httpPort``)."""
        return self.echo.assertions(
            method=request.method,
            raw_path=request.raw_path,
            host=request.headers.get("Host", ""),
            proto=f"HTTP/{request.version.major}.{request.version.minor}",
            headers=[(_decode(n), _decode(v)) for n, v in request.raw_headers],
            port=self.config.http_port or _local_port(request),
        )

    # -- handlers ---------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Single entry point: log the head, then route on the collapsed path."""
        # echo-basic rewrites URL.Path ("//" -> "/") before its ServeMux; the
        # RequestURI that is reported and logged stays untouched.
        path = _MULTI_SLASH_RE.sub("/", request.path)
        head = self._head_line(request)
        try:
            if path == "/health":
                self.echo.emit(head)
                return web.Response(status=200, text="OK", content_type="text/plain")
            if path == "/ready":
                self.echo.emit(head)
                return web.Response(status=200)
            if path.startswith("/status/"):
                self.echo.emit(head)
                return await self._status(path)
            if path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
                self.echo.emit(head)
                return await self._websocket(request)
            # content.read() rather than request.read(): no client_max_size cap,
            # an echo server must hand back whatever it was sent.
            body = await request.content.read()
            self.echo.emit(self._head_line(request, body), self._echoing_line(request))
            return await self._echo(request, body)
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception as exc:  # noqa: BLE001 - echo-basic turns any error into a JSON 500
            return self._error(str(exc) or type(exc).__name__)

    @staticmethod
    async def _websocket(request: web.Request) -> web.WebSocketResponse:
        """``/ws`` echoes every frame back with its type (text stays text, binary stays binary)."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def _status(self, path: str) -> web.Response:
        """``/status/NNN`` answers NNN (400 when NNN is not a 3-digit code)."""
        code = 400
        m = _STATUS_PATH_RE.match(path)
        if m is not None and 200 <= int(m.group(1)) <= 999:
            # 1xx cannot be a final response; echo-basic's regexp takes 3 digits.
            code = int(m.group(1))
        if self.config.delay > 0:
            await asyncio.sleep(self.config.delay)
        return web.Response(status=code)

    async def _echo(self, request: web.Request, body: bytes) -> web.Response:

        delay_param = request.query.get("delay", "")
        if delay_param:
            try:
                seconds = parse_go_duration(delay_param)
            except ValueError as exc:
                return self._error(str(exc))
            if seconds > 0:
                await asyncio.sleep(seconds)
        if self.config.delay > 0:
            await asyncio.sleep(self.config.delay)

        status = self.config.status if self.config.status is not None else 200
        status = self.config.path_status.get(request.path, status)
        if body:
            # Seed (pipy) behaviour: answer the body, bytes exact.
            resp = web.Response(status=status, body=body)
            for name, value in self._echo_set_headers(request):
                resp.headers.add(name, value)
            content_type = request.headers.get("Content-Type")
            if content_type is not None:
                resp.headers["Content-Type"] = content_type
            # else aiohttp sends application/octet-stream
            return resp

        payload = json.dumps(self._assertions(request), indent=1).encode()
        resp = web.Response(status=status, body=payload)
        for name, value in self._echo_set_headers(request):
            resp.headers.add(name, value)
        # Set after the echo headers, exactly as echo-basic does.
        resp.headers["Content-Type"] = "application/json"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


def build_app(**options: Any) -> web.Application:
    """Build the echo application (no socket bound: tests may use any runner); the options are
    :func:`controlplane.echo.common.make_config`'s."""
    return app_for(Echo(make_config(**options)))


def app_for(echo: Echo) -> web.Application:
    """The HTTP/1 application of ``echo`` (its other transports share the same ``Echo``)."""
    server = _EchoServer(echo)
    app = web.Application()
    # One catch-all route: routing happens on the "//"-collapsed path inside
    # the handler, which aiohttp's router cannot do.
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


class _Stalled(asyncio.Protocol):
    """Accept, then never read: the kernel buffers fill and the sender is pushed back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)  # a TCP server's transport
        transport.pause_reading()


async def serve_stalled(host: str, port: int) -> asyncio.Server:
    """A server that accepts TCP connections and never reads or answers (``--stall``)."""
    return await asyncio.get_running_loop().create_server(_Stalled, host, port)
