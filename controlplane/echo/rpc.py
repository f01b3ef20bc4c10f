"""The echo server's gRPC port (``mirrorplane echo --grpc-port N``): upstream's conformance echo.

It serves ``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`` like echo-basic with
``GRPC_ECHO_SERVER`` set (conformance/echo-basic/grpc/grpc.go): ``Echo`` and ``EchoTwo`` answer
with the call's assertions (method, metadata incl. ``:authority``, authority, and the pod's
context), ``EchoThree`` is UNIMPLEMENTED. ``mirrorplane.echo.v1.StreamEcho/ServerStream`` adds a
server-streaming call for mirroring tests; server reflection lets grpcurl call all of them.

Every call, EchoThree included, is logged as one line before it is answered::

    [NAME] {"protocol": "gRPC", "method": "/pkg.Service/Method", "metadata": {...},
            "message": {"bytes": N, "sha256": "..."}}

so that a person (or a test) sees a mirror receive the same call as the primary: the digest is of
the request message exactly as it arrived.

Why grpcio's *threaded* server and not ``grpc.aio``: the assertions must carry ``:authority``
(what a mirror's hostname rewrite changes), and only the threaded server lets a handler read it
(``call_details.host``; grpc/grpc#38906 asks for a public accessor, PR #42651 adds one). Log lines
are handed to the event loop, so the echo's output keeps a single writer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_reflection.v1alpha import reflection

from .common import Echo, digest, format_hostport
from .grpcecho import grpcecho_pb2 as pb
from .v1 import streamecho_pb2 as stream_pb

GRPC_ECHO = pb.DESCRIPTOR.services_by_name["GrpcEcho"].full_name
STREAM_ECHO = stream_pb.DESCRIPTOR.services_by_name["StreamEcho"].full_name
MAX_STREAM_COUNT = 1000

# Calls served at once; more wait in the queue. Generous, because a --delay'ed mirror holds one
# thread per call for the whole delay.
_WORKERS = 64

# --status: an HTTP code as the gRPC code a gateway would map it back from (the inverse of
# grpc-gateway's HTTPStatusFromCode), so that `--status 500` reads INTERNAL on both sides.
_GRPC_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status ``--status HTTP_STATUS`` answers with (OK for 2xx, UNKNOWN when unmapped)."""
    if 200 <= http_status < 300:
        return grpc.StatusCode.OK
    return _GRPC_CODE_OF_HTTP.get(http_status, grpc.StatusCode.UNKNOWN)


def _text(value: str | bytes) -> str:
    # Binary ("-bin") metadata arrives as bytes: show it as on the wire, base64.
    return value if isinstance(value, str) else base64.b64encode(value).decode()


def _method_and_authority(context: grpc.ServicerContext) -> tuple[str, str]:
    """The call's method and ``:authority``; gRPC Python keeps the latter out of
    ``invocation_metadata()``, so both come from the threaded server's call details."""
    details = context._rpc_event.call_details
    return details.method.decode(), details.host.decode("utf-8", "replace")


class _Servicer:
    """The handlers of both services; every call goes through :meth:`_call`."""

    def __init__(self, echo: Echo, loop: asyncio.AbstractEventLoop) -> None:
        self.echo = echo
        self._loop = loop
        # Set on stop: a --delay'ed call ends at once instead of keeping the process alive.
        self.stopping = threading.Event()

    def _emit(self, line: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self.echo.emit, line)
        except RuntimeError:  # the loop closed: the server is shutting down, nobody reads the log
            pass

    def _call(
        self, raw: bytes, context: grpc.ServicerContext, parse: type[Message]
    ) -> tuple[Any, str, list[tuple[str, str]]]:
        """Log the call, parse its message, then apply --delay and --status (in that order, like HTTP).

        Returns the message, the method and the metadata (``:authority`` first)."""
        method, authority = _method_and_authority(context)
        metadata = [(":authority", authority)]
        metadata += [(m.key, _text(m.value)) for m in context.invocation_metadata()]
        joined: dict[str, str] = {}
        for key, value in metadata:
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        self._emit(json.dumps({"protocol": "gRPC", "method": method, "metadata": joined, "message": digest(raw)}))
        try:
            request = parse.FromString(raw)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot parse {parse.DESCRIPTOR.full_name}: {exc}")
        cfg = self.echo.config
        if cfg.delay > 0 and self.stopping.wait(cfg.delay):
            context.abort(grpc.StatusCode.UNAVAILABLE, "the echo server is stopping")
        if cfg.status is not None and (code := grpc_code(cfg.status)) is not grpc.StatusCode.OK:
            context.abort(code, f"mirrorplane echo --status {cfg.status}")
        return request, method, metadata

    def echo_call(self, raw: bytes, context: grpc.ServicerContext) -> pb.EchoResponse:
        request, method, metadata = self._call(raw, context, pb.EchoRequest)
        cfg = self.echo.config
        assertions = pb.Assertions(
            fully_qualified_method=method,
            headers=[pb.Header(key=k, value=v) for k, v in metadata],
            authority=metadata[0][1],
            context=pb.Context(namespace=cfg.namespace, ingress=cfg.ingress, service_name=cfg.service, pod=cfg.pod),
        )
        return pb.EchoResponse(assertions=assertions, request=request)

    def echo_three(self, raw: bytes, context: grpc.ServicerContext) -> pb.EchoResponse:
        self._call(raw, context, pb.EchoRequest)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "method EchoThree not implemented")
        raise AssertionError("unreachable: abort() raises")  # grpc is untyped: mypy cannot know it

    def server_stream(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[stream_pb.StreamResponse]:
        request, _, _ = self._call(raw, context, stream_pb.StreamRequest)
        if request.count > MAX_STREAM_COUNT:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"count must be at most {MAX_STREAM_COUNT}, got {request.count}"
            )
        for index in range(request.count):
            yield stream_pb.StreamResponse(index=index, message=request.message, pod=self.echo.config.pod)


def _handlers(servicer: _Servicer) -> Sequence[grpc.GenericRpcHandler]:
    # No request deserializer: handlers get the message's bytes as they arrived, for the digest.
    def unary(fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, response_serializer=pb.EchoResponse.SerializeToString)

    echo = {
        "Echo": unary(servicer.echo_call),
        "EchoTwo": unary(servicer.echo_call),
        "EchoThree": unary(servicer.echo_three),
    }
    stream = grpc.unary_stream_rpc_method_handler(
        servicer.server_stream, response_serializer=stream_pb.StreamResponse.SerializeToString
    )
    return [
        grpc.method_handlers_generic_handler(GRPC_ECHO, echo),
        grpc.method_handlers_generic_handler(STREAM_ECHO, {"ServerStream": stream}),
    ]


class GrpcEchoServer:
    """A started gRPC echo listener: ``port`` is the bound port."""

    def __init__(self, echo: Echo, host: str, port: int) -> None:
        self._executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix=f"echo-{echo.config.name}-grpc")
        self._servicer = _Servicer(echo, asyncio.get_running_loop())
        # No SO_REUSEPORT: a second echo on a busy port must fail, not share the port unseen.
        self._server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers(_handlers(self._servicer))
        reflection.enable_server_reflection((GRPC_ECHO, STREAM_ECHO, reflection.SERVICE_NAME), self._server)
        address = format_hostport(host, port)
        try:
            self.port: int = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio's "Failed to bind": report it like the HTTP side's OSError
            raise OSError(f"gRPC port {address}: {exc}") from None
        self._server.start()

    def stop(self) -> None:
        """Stop at once: open calls are cancelled and delayed ones end, so no thread keeps the process alive."""
        self._servicer.stopping.set()
        self._server.stop(None)
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve_grpc(echo: Echo, host: str, port: int) -> GrpcEchoServer:
    """Start the gRPC listener (plaintext; port 0 = any free port) on the running loop's behalf:
    the loop writes ``echo``'s log lines."""
    return GrpcEchoServer(echo, host, port)
