"""Picking free TCP ports for things started on this machine (local Envoys, tests, the
conformance harness).

A port found by binding port 0 comes from the kernel's ephemeral range, the same range outgoing
connections take their local ports from: between finding it and the listener binding it (Envoy
gets its listeners over xDS, later), a busy machine can hand it to an outgoing connection and
the bind fails with "Address already in use". Ports are therefore picked below that range, where
the kernel never assigns anything on its own, and never twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from .errors import BindError

_handed_out: set[int] = set()
_LOW = 10000  # above the usual well-known and registered service ports people run locally


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, outside the ephemeral range, not handed out before."""
    high = _ephemeral_start() - 1
    for _ in range(1000):
        port = random.randint(_LOW, high) if high > _LOW else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise BindError(f"no free TCP port found on {host}")
