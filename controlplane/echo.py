"""Echo HTTP backend for local mode, end-to-end tests and the conformance harness.

Why this exists: mirroring is only observable from the *backend* side (Envoy
discards the mirror's response), so tests need backends that leave a trace of
every request they receive.  This server deliberately behaves like two
well-known echo servers at once, so that scripts written for either keep
working unchanged:

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

Run it with ``mirrorplane echo --port N --name NAME`` or
``python -m controlplane.echo --port N --name NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import signal
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from aiohttp import web

__all__ = [
    "add_arguments",
    "build_app",
    "canonical_header_key",
    "main",
    "main_from_args",
    "parse_go_duration",
    "run_echo",
    "serve_stalled",
]

# Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no
# look-alike characters), so default pod names look like real pod names.
_K8S_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_STATUS_PATH_RE = re.compile(r"^/status/(\d{3})$")
_MULTI_SLASH_RE = re.compile(r"/{2,}")
# RFC 7230 "token" characters; Go only canonicalises header names made of these.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

# Request headers that Go's net/http moves out of ``Request.Header``; echo-basic
# therefore never reports them under "headers", and neither do we.
_GO_HIDDEN_REQUEST_HEADERS = frozenset({"host", "transfer-encoding"})

# Graceful-shutdown budget for in-flight requests.  Short on purpose: local
# mode and tests stop echo servers with Ctrl-C and must not hang on a request
# that is sleeping through a long ``?delay=``.
_SHUTDOWN_TIMEOUT = 0.5


# ---------------------------------------------------------------------------
# Helpers mirroring Go semantics (echo-basic is written in Go, and conformance
# tooling compares against Go's behaviour).
# ---------------------------------------------------------------------------

_GO_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_MAX_DURATION_NS = (1 << 63) - 1


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"2s"``, ``"1h2m"``, ``"-1.5ms"``) into seconds.

    Why: echo-basic's ``?delay=`` takes Go durations and conformance tests
    send them verbatim; error messages copy Go's so that a 500 body reads the
    same as the real server's.  Raises ``ValueError``.
    """
    orig = text
    quoted = '"' + orig + '"'
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total_ns = 0.0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise ValueError(f"time: invalid duration {quoted}")
        m = re.match(r"([0-9]*)(?:\.([0-9]*))?", s)
        assert m is not None  # the pattern can always match the empty string
        int_part, frac_part = m.group(1), m.group(2)
        if not int_part and not frac_part:
            # "." alone, or ".s": no digits at all
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[m.end():]
        unit_len = 0
        while unit_len < len(s) and s[unit_len] not in "0123456789.":
            unit_len += 1
        unit = s[:unit_len]
        s = s[unit_len:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        value = float(f"{int_part or '0'}.{frac_part or '0'}")
        total_ns += value * _GO_UNITS[unit]
        if total_ns > _GO_MAX_DURATION_NS:
            raise ValueError(f"time: invalid duration {quoted}")
    seconds = total_ns / 1e9
    return -seconds if neg else seconds


def canonical_header_key(name: str) -> str:
    """Return Go's ``textproto.CanonicalMIMEHeaderKey`` form (``x-forwarded-for`` → ``X-Forwarded-For``).

    Why: echo-basic reports ``Request.Header``, whose keys Go has already
    canonicalised; conformance assertions look headers up by that spelling.
    Like Go, names containing non-token characters are returned unchanged.
    """
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return name
    out = []
    upper = True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


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


def echo_set_headers(values: list[str]) -> list[tuple[str, str]]:
    """Parse ``X-Echo-Set-Header: Name:val,Name2:val2`` like echo-basic.

    Names keep their case; a repeated name gets its values joined with
    ``,`` (echo-basic appends to the first value).
    """
    collected: dict[str, str] = {}
    for header_list in values:
        for kv in header_list.split(","):
            name, _, value = kv.strip().partition(":")
            if not name:
                continue
            if name in collected:
                collected[name] += "," + value.strip()
            else:
                collected[name] = value
    return list(collected.items())


def echoing_line(raw_path: str, remote: str) -> str:
    """echo-basic's exact line; conformance greps "Echoing back request made to <path> to client"."""
    return f"Echoing back request made to {raw_path} to client ({remote})"


def _default_pod_name(name: str) -> str:
    """Pod-like default name (``pipy-x7kq2``): logs and JSON look like a Deployment pod's."""
    suffix = "".join(random.choice(_K8S_SUFFIX_ALPHABET) for _ in range(5))
    return f"{name}-{suffix}"


# ---------------------------------------------------------------------------
# Application
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _EchoConfig:
    name: str
    namespace: str
    pod: str
    service: str
    ingress: str
    delay: float
    status: int | None
    http_port: int
    out: TextIO | None
    path_status: dict[str, int]


_CONFIG_KEY = web.AppKey("mirrorplane_echo_config", _EchoConfig)
_SERVER_KEY = web.AppKey("mirrorplane_echo_server", object)


class _EchoServer:
    """Request handling; one instance per application."""

    def __init__(self, config: _EchoConfig) -> None:
        self.config = config
        self._prefix = f"[{config.name}] "

    # -- output -----------------------------------------------------------

    def emit(self, *lines: str) -> None:
        """Write whole lines to stdout and flush at once.

        Why flush: stdout is often a pipe (subprocess, ``kubectl logs``-style
        harnesses) and is then block-buffered; tests wait on these lines.
        All lines of one request go out in one write so they stay adjacent.
        """
        stream = self.config.out if self.config.out is not None else sys.stdout
        text = "".join(self._prefix + line + "\n" for line in lines)
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
        except (OSError, ValueError):
            # Reader went away (broken pipe / closed stream): keep serving.
            pass

    def _head_line(self, request: web.BaseRequest, body: bytes = b"") -> str:
        """The pipy ``console.log(msg.head)`` equivalent, as one JSON line.

        A body is summarised by its length and SHA-256, so a mirror's log proves it received
        the client's bytes exactly without printing them.
        """
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.raw_headers:
            key = _decode(raw_name).lower()
            value = _decode(raw_value)
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        head = {
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "method": request.method,
            "path": request.raw_path,
            "headers": headers,
        }
        if body:
            head["body"] = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        # ensure_ascii keeps the line pure ASCII: safe for any stdout encoding.
        return json.dumps(head)

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
        return self.assertions(
            method=request.method,
            raw_path=request.raw_path,
            host=request.headers.get("Host", ""),
            proto=f"HTTP/{request.version.major}.{request.version.minor}",
            headers=[(_decode(n), _decode(v)) for n, v in request.raw_headers],
            port=self.config.http_port or _local_port(request),
        )

    def assertions(
        self, *, method: str, raw_path: str, host: str, proto: str, headers: list[tuple[str, str]], port: int
    ) -> dict[str, Any]:
        """The JSON body for any transport (HTTP/1.1 here, h2c in ``echoh2c``)."""
        grouped: dict[str, list[str]] = {}
        for name, value in headers:
            if name.lower() in _GO_HIDDEN_REQUEST_HEADERS or name.startswith(":"):
                continue
            grouped.setdefault(canonical_header_key(name), []).append(value)
        cfg = self.config
        return {
            "path": raw_path,
            "host": host,
            "method": method,
            "proto": proto,
            "headers": dict(sorted(grouped.items())),  # Go marshals maps sorted
            "namespace": cfg.namespace,
            "ingress": cfg.ingress,
            "service": cfg.service,
            "pod": cfg.pod,
            "httpPort": str(port),
        }

    # -- handlers ---------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Single entry point: log the head, then route on the collapsed path."""
        # echo-basic rewrites URL.Path ("//" -> "/") before its ServeMux; the
        # RequestURI that is reported and logged stays untouched.
        path = _MULTI_SLASH_RE.sub("/", request.path)
        head_line = self._head_line(request)
        try:
            if path == "/health":
                self.emit(head_line)
                return web.Response(status=200, text="OK", content_type="text/plain")
            if path == "/ready":
                self.emit(head_line)
                return web.Response(status=200)
            if path.startswith("/status/"):
                self.emit(head_line)
                return await self._status(path)
            if path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
                self.emit(head_line)
                return await self._websocket(request)
            # content.read() rather than request.read(): no client_max_size cap,
            # an echo server must hand back whatever it was sent.
            body = await request.content.read()
            self.emit(self._head_line(request, body), self._echoing_line(request))
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


def build_app(
    *,
    name: str,
    namespace: str = "",
    pod: str = "",
    service: str = "",
    ingress: str = "",
    delay: float = 0.0,
    status: int | None = None,
    http_port: int = 0,
    out: TextIO | None = None,
    path_status: dict[str, int] | None = None,
) -> web.Application:
    """Build the echo application (no socket bound: tests may use any runner).

    ``pod`` defaults to ``<name>-<5 random chars>`` and ``service`` to
    ``name`` so the JSON looks like a real pod's answer and mirrored requests
    can be attributed to a backend.  ``delay`` (seconds) is added to every
    echo and ``/status`` answer; ``status`` overrides the echo answer's code
    (``/health`` and ``/status/NNN`` stay truthful so probes keep working).
    ``http_port`` is reported as ``httpPort``; 0 means "the port the request
    arrived on".  ``path_status`` answers echoes of these exact paths with
    these codes (shadow testing's seed: a mirror that differs on one path).  ``out`` receives the log lines (default: the *current*
    ``sys.stdout``, looked up at each write so capture tools work).
    """
    if not name:
        raise ValueError("name must not be empty")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay!r}")
    if status is not None and not 200 <= status <= 599:
        raise ValueError(f"status must be within 200..599, got {status!r}")
    config = _EchoConfig(
        name=name,
        namespace=namespace,
        pod=pod or _default_pod_name(name),
        service=service or name,
        ingress=ingress,
        delay=float(delay),
        status=status,
        http_port=http_port,
        out=out,
        path_status=dict(path_status or {}),
    )
    server = _EchoServer(config)
    app = web.Application()
    app[_CONFIG_KEY] = config
    app[_SERVER_KEY] = server
    # One catch-all route: routing happens on the "//"-collapsed path inside
    # the handler, which aiohttp's router cannot do.
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


def _format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_echo(
    port: int, name: str, *, host: str = "127.0.0.1", h2c_port: int | None = None, **app_options: Any
) -> None:
    """Serve the echo app on ``host:port`` until cancelled.

    Prints ``[NAME] listening on HOST:PORT`` once the socket is bound (IPv6
    hosts are bracketed, e.g. ``[::1]:8081``).  ``port=0`` binds a free port
    and the ready line reports the real one, which lets harnesses avoid
    port races.  With ``h2c_port`` (0 = any) the same answers are also served
    as HTTP/2 cleartext (prior knowledge), announced first as
    ``[NAME] listening h2c on HOST:PORT``.  ``app_options`` go to :func:`build_app`.
    """
    out: TextIO | None = app_options.get("out")
    app_options.setdefault("http_port", port)
    app = build_app(name=name, **app_options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    h2c: asyncio.Server | None = None
    try:
        stream = out if out is not None else sys.stdout
        if h2c_port is not None:
            from .echoh2c import serve_h2c

            h2c = await serve_h2c(app[_SERVER_KEY], host, h2c_port)  # type: ignore[arg-type]
            h2c_bound = h2c.sockets[0].getsockname()[1]
            stream.write(f"[{name}] listening h2c on {_format_hostport(host, h2c_bound)}\n")
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = port
        for addr in runner.addresses:
            if isinstance(addr, (tuple, list)) and len(addr) >= 2:
                bound_port = int(addr[1])
                break
        stream.write(f"[{name}] listening on {_format_hostport(host, bound_port)}\n")
        stream.flush()
        await asyncio.Future()  # serve until cancelled
    finally:
        if h2c is not None:
            h2c.close()
        await runner.cleanup()


class _Stalled(asyncio.Protocol):
    """Accept, then never read: the kernel buffers fill and the sender is pushed back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]


async def serve_stalled(host: str, port: int) -> asyncio.Server:
    """A server that accepts TCP connections and never reads or answers (``--stall``)."""
    return await asyncio.get_running_loop().create_server(_Stalled, host, port)


async def _run_stalled(args: argparse.Namespace) -> None:
    server = await serve_stalled(args.host, args.port)
    bound = server.sockets[0].getsockname()[1]
    print(f"[{args.name}] stalling on {_format_hostport(args.host, bound)} (accepts, never reads)", flush=True)
    async with server:
        await asyncio.Future()


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _delay_arg(value: str) -> float:
    """``--delay`` takes seconds (``2``, ``0.5``) or a Go duration (``2s``, ``500ms``)."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0 or seconds != seconds:  # negative or NaN
        raise argparse.ArgumentTypeError(f"delay must be >= 0, got {value!r}")
    return seconds


def _status_arg(value: str) -> int:
    try:
        code = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid status code {value!r}") from None
    if not 200 <= code <= 599:
        raise argparse.ArgumentTypeError(f"status must be within 200..599, got {code}")
    return code


def _path_status_arg(text: str) -> tuple[str, int]:
    path, _, code = text.rpartition("=")
    if not path.startswith("/") or not code.isdigit() or not 200 <= int(code) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH=CODE, e.g. /v2-only=500")
    return path, int(code)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the echo flags to ``parser`` (shared by ``mirrorplane echo`` and ``python -m``).

    The echo-basic environment variables (``POD_NAME``, ``NAMESPACE``,
    ``SERVICE_NAME``, ``INGRESS_NAME``) provide the defaults so the same
    manifests/env work for both servers.
    """
    env = os.environ
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on (0 = any free port)")
    parser.add_argument("--name", required=True, help="server name, used as log prefix (e.g. pipy)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; ::1 works)")
    parser.add_argument(
        "--h2c-port", type=int, default=int(env["H2C_PORT"]) if env.get("H2C_PORT") else None,
        help="also serve HTTP/2 cleartext (prior knowledge) on this port (env H2C_PORT; 0 = any free port)",
    )
    parser.add_argument("--namespace", default=env.get("NAMESPACE", ""), help="reported namespace (env NAMESPACE)")
    parser.add_argument("--pod", default=env.get("POD_NAME", ""), help="reported pod name (env POD_NAME; default NAME-<random>)")
    parser.add_argument("--service", default=env.get("SERVICE_NAME", ""), help="reported service (env SERVICE_NAME; default NAME)")
    parser.add_argument("--ingress", default=env.get("INGRESS_NAME", ""), help="reported ingress (env INGRESS_NAME)")
    parser.add_argument("--delay", type=_delay_arg, default=0.0, help="delay every answer: seconds or Go duration (2, 0.5, 500ms)")
    parser.add_argument("--status", type=_status_arg, default=None, help="answer every echo with this status (e.g. 503)")
    parser.add_argument("--stall", action="store_true", help="accept connections and never read them: a stuck backend")
    parser.add_argument(
        "--path-status",
        action="append",
        type=_path_status_arg,
        default=[],
        metavar="PATH=CODE",
        help="answer echoes of this exact path with CODE, e.g. /v2-only=500 (repeatable)",
    )


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    """Run the server; SIGTERM stops it cleanly (SIGINT is handled by asyncio.run)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - non-POSIX / non-main thread
        pass
    serve = asyncio.ensure_future(
        _run_stalled(args)
        if args.stall
        else run_echo(
            args.port,
            args.name,
            host=args.host,
            h2c_port=args.h2c_port,
            namespace=args.namespace,
            pod=args.pod,
            service=args.service,
            ingress=args.ingress,
            delay=args.delay,
            status=args.status,
            path_status=dict(args.path_status),
        )
    )
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not serve.done():
            serve.cancel()
            try:
                await serve
            except asyncio.CancelledError:
                pass
    if serve.done() and not serve.cancelled() and serve.exception() is not None:
        raise serve.exception()  # type: ignore[misc]


def main_from_args(args: argparse.Namespace) -> int:
    """Run the echo server until Ctrl-C/SIGTERM; returns the process exit code (0 on Ctrl-C)."""
    try:
        asyncio.run(_serve_until_signalled(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:  # e.g. address already in use
        print(f"[{args.name}] error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m controlplane.echo``."""
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.echo",
        description="Echo HTTP backend (pipy echo + Gateway API echo-basic behaviour).",
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
