"""Digests for code that runs in a worker thread beside the event loop, without releasing the GIL.

CPython's hashlib lets go of the interpreter lock while it hashes 2,048 bytes or more. That
looks harmless, but a worker that does it often starves the event loop: each release wakes the
waiting loop thread and restarts its wait for a full switch interval, and the worker takes the
lock back within microseconds, before the loop thread has even been scheduled. The loop thread
never waits a whole interval, so it never asks for the lock, and gets it only when the worker's
section ends. Building a 10,000-route table hashed one 13 kB virtual host every 0.4 ms, under
the 0.5 ms switch interval (gcpause.py): the loop stood still for 75-280 ms of the 300 ms build,
in most cold starts of benchmarks/change_latency.py (docs/performance.md).

Hashed in pieces below that size, the lock is never released, and the worker is interrupted at
the switch interval like any other Python code, between two pieces. Every worker loop that
hashes a buffer per item goes through here: the route table's virtual hosts (xds/encoded.py),
the file provider's documents (providers/yamlread.py) and the CEL memo's long values
(gatewayapi/schema.py). One large buffer hashed once (a whole file) may release the lock: a
single release gives the loop its turn.
"""

from __future__ import annotations

import hashlib
from typing import Any

# hashlib releases the GIL for a buffer of HASHLIB_GIL_MINSIZE (2,048) bytes or more.
PIECE = 2047


def _held(h: Any, data: bytes | memoryview) -> bytes:
    if type(data) is bytes and len(data) <= PIECE:  # one piece (most virtual hosts): no view to cut
        h.update(data)
        small: bytes = h.digest()
        return small
    view = memoryview(data).cast("B")
    for start in range(0, len(view), PIECE):
        h.update(view[start : start + PIECE])
    digest: bytes = h.digest()
    return digest


def sha256(data: bytes | memoryview) -> bytes:
    """The SHA-256 digest of ``data``, hashed with the GIL held (route tables, encoded.py)."""
    return _held(hashlib.sha256(), data)


def blake2b_128(data: bytes | memoryview) -> bytes:
    """The 128-bit BLAKE2b digest of ``data``, hashed with the GIL held: the file provider's
    documents and the CEL memo's long values, one per document or object in a worker's loop."""
    return _held(hashlib.blake2b(digest_size=16), data)
