"""The echo backend of local mode, the end-to-end tests and the conformance harness.

Why it exists: mirroring is only observable from the *backend* side (Envoy discards the mirror's
response), so tests need backends that leave a trace of every request they receive. One server
(one ``--name``, one log) answers on up to three transports:

* ``http``: HTTP/1.1 (and WebSocket), pipy echo + echo-basic behaviour; ``--stall`` too;
* ``h2c``: the same answers over HTTP/2 cleartext (``--h2c-port``);
* ``rpc``: upstream's gRPC conformance echo and a streaming call (``--grpc-port``);

``common`` holds what they share; ``cli`` runs them together (``mirrorplane echo``,
``python -m controlplane.echo``). The transports import ``common`` only, never each other.

The names below are imported on first use (PEP 562), so that ``mirrorplane`` can read the echo's
flags (``options``) without importing its transports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import main, main_from_args, run_echo
    from .common import canonical_header_key, echo_set_headers, echoing_line, parse_go_duration
    from .http import build_app, serve_stalled
    from .options import add_arguments

__all__ = [
    "add_arguments",
    "build_app",
    "canonical_header_key",
    "echo_set_headers",
    "echoing_line",
    "main",
    "main_from_args",
    "parse_go_duration",
    "run_echo",
    "serve_stalled",
]

_WHERE = {  # name: the module of the package that defines it
    "add_arguments": "options",
    "build_app": "http",
    "canonical_header_key": "common",
    "echo_set_headers": "common",
    "echoing_line": "common",
    "main": "cli",
    "main_from_args": "cli",
    "parse_go_duration": "common",
    "run_echo": "cli",
    "serve_stalled": "http",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
