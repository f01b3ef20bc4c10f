"""The echo's command-line flags, apart from the servers: ``mirrorplane`` builds its whole parser
for every command, and ``serve`` should not import the echo itself (its transports, gRPC's echo
service) to do so (docs/performance.md, "Cold start: the imports, ninth round")."""

from __future__ import annotations

import argparse
import os


def _delay_arg(value: str) -> float:
    """``--delay`` takes seconds (``2``, ``0.5``) or a Go duration (``2s``, ``500ms``)."""
    from .common import parse_go_duration  # the echo's own module: only `echo --delay` needs it

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


def path_status_arg(text: str) -> tuple[str, int]:
    path, _, code = text.rpartition("=")
    if not path.startswith("/") or not code.isdigit() or not 200 <= int(code) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH=CODE, e.g. /v2-only=500")
    return path, int(code)


def _status_arg(value: str) -> int:
    try:
        code = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid status code {value!r}") from None
    if not 200 <= code <= 599:
        raise argparse.ArgumentTypeError(f"status must be within 200..599, got {code}")
    return code


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
        "--h2c-port",
        type=int,
        default=int(env["H2C_PORT"]) if env.get("H2C_PORT") else None,
        help="also serve HTTP/2 cleartext (prior knowledge) on this port (env H2C_PORT; 0 = any free port)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve upstream's gRPC conformance echo (GrpcEcho) and StreamEcho on this port (0 = any free port)",
    )
    parser.add_argument("--namespace", default=env.get("NAMESPACE", ""), help="reported namespace (env NAMESPACE)")
    parser.add_argument(
        "--pod", default=env.get("POD_NAME", ""), help="reported pod name (env POD_NAME; default NAME-<random>)"
    )
    parser.add_argument(
        "--service", default=env.get("SERVICE_NAME", ""), help="reported service (env SERVICE_NAME; default NAME)"
    )
    parser.add_argument("--ingress", default=env.get("INGRESS_NAME", ""), help="reported ingress (env INGRESS_NAME)")
    parser.add_argument(
        "--delay", type=_delay_arg, default=0.0, help="delay every answer: seconds or Go duration (2, 0.5, 500ms)"
    )
    parser.add_argument(
        "--status",
        type=_status_arg,
        default=None,
        help="answer every echo with this status (e.g. 503; gRPC: the matching code, 500 = INTERNAL)",
    )
    parser.add_argument("--stall", action="store_true", help="accept connections and never read them: a stuck backend")
    parser.add_argument(
        "--path-status",
        action="append",
        type=path_status_arg,
        default=[],
        metavar="PATH=CODE",
        help="answer HTTP echoes of this exact path with CODE, e.g. /v2-only=500 (repeatable)",
    )
