"""``mirrorplane echo``: run the echo backend's transports together until Ctrl-C or SIGTERM.

The HTTP/1.1 port always runs (``--port``); ``--h2c-port`` and ``--grpc-port`` add the other
transports of the same server (one name, one log, one ``--delay``/``--status``). ``--stall``
replaces all of it with a listener that never reads (docs/mirroring.md).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from aiohttp import web

from ..errors import UsageError
from .common import Echo, format_hostport, make_config
from .http import SHUTDOWN_TIMEOUT, app_for, serve_stalled
from .options import add_arguments
from .rpc import GrpcEchoServer, serve_grpc


def _h2c_server() -> Callable[[Echo, str, int], Coroutine[Any, Any, asyncio.Server]]:
    """The h2c listener needs the `echo` extra (h2), which only h2c backends use: imported on demand."""
    try:
        from .h2c import serve_h2c
    except ImportError as exc:
        raise UsageError(f"--h2c-port needs the h2 package: pip install 'mirrorplane[echo]' ({exc})") from exc
    return serve_h2c


async def run_echo(
    port: int,
    name: str,
    *,
    host: str = "127.0.0.1",
    h2c_port: int | None = None,
    grpc_port: int | None = None,
    **options: Any,
) -> None:
    """Serve the echo server on ``host:port`` until cancelled.

    Prints ``[NAME] listening on HOST:PORT`` once the socket is bound (IPv6
    hosts are bracketed, e.g. ``[::1]:8081``).  ``port=0`` binds a free port
    and the ready line reports the real one, which lets harnesses avoid
    port races.  With ``h2c_port`` (0 = any) the same answers are also served
    as HTTP/2 cleartext (prior knowledge), announced first as
    ``[NAME] listening h2c on HOST:PORT``; with ``grpc_port`` (0 = any) the gRPC
    echo, announced as ``[NAME] listening grpc on HOST:PORT``.  The HTTP/1.1 line
    always comes last: when it is printed, every port is ready.  ``options`` go
    to :func:`controlplane.echo.common.make_config`.
    """
    serve_h2c = _h2c_server() if h2c_port is not None else None
    out: TextIO | None = options.get("out")
    options.setdefault("http_port", port)
    echo = Echo(make_config(name=name, **options))
    runner = web.AppRunner(app_for(echo), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    h2c: asyncio.Server | None = None
    grpc_server: GrpcEchoServer | None = None
    try:
        stream = out if out is not None else sys.stdout
        if serve_h2c is not None and h2c_port is not None:
            h2c = await serve_h2c(echo, host, h2c_port)
            h2c_bound = h2c.sockets[0].getsockname()[1]
            stream.write(f"[{name}] listening h2c on {format_hostport(host, h2c_bound)}\n")
        if grpc_port is not None:
            grpc_server = await serve_grpc(echo, host, grpc_port)
            stream.write(f"[{name}] listening grpc on {format_hostport(host, grpc_server.port)}\n")
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = port
        for addr in runner.addresses:
            if isinstance(addr, (tuple, list)) and len(addr) >= 2:
                bound_port = int(addr[1])
                break
        stream.write(f"[{name}] listening on {format_hostport(host, bound_port)}\n")
        stream.flush()
        await asyncio.Future()  # serve until cancelled
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        if h2c is not None:
            h2c.close()
        await runner.cleanup()


async def _run_stalled(args: argparse.Namespace) -> None:
    server = await serve_stalled(args.host, args.port)
    bound = server.sockets[0].getsockname()[1]
    print(f"[{args.name}] stalling on {format_hostport(args.host, bound)} (accepts, never reads)", flush=True)
    async with server:
        await asyncio.Future()


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
            grpc_port=args.grpc_port,
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
    failure = serve.exception() if serve.done() and not serve.cancelled() else None
    if failure is not None:
        raise failure


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
        description="Echo backend (pipy echo + Gateway API echo-basic behaviour): HTTP/1.1, h2c, gRPC.",
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))
