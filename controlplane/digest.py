"""SHA-256 for code that runs in a worker thread beside the event loop, without releasing the GIL.

CPython's hashlib lets go of the interpreter lock while it hashes 2,048 bytes or more. That
looks harmless, but a worker that does it often starves the event loop: each release wakes the
waiting loop thread and restarts its wait for a full switch interval, and the worker takes the
lock back within microseconds, before the loop thread has even been scheduled. The loop thread
never waits a whole interval, so it never asks for the lock, and gets it only when the worker's
section ends. Building a 10,000-route table hashed one 13 kB virtual host every 0.4 ms, under
the 0.5 ms switch interval (gcpause.py): the loop stood still for 75-280 ms of the 300 ms build,
in most cold starts of benchmarks/change_latency.py (docs/performance.md).

Hashed in pieces below that size, the lock is never released, and the worker is interrupted at
the switch interval like any other Python code, between two pieces.
"""

from __future__ import annotations

import hashlib

# hashlib releases the GIL for a buffer of HASHLIB_GIL_MINSIZE (2,048) bytes or more.
PIECE = 2047


def sha256(data: bytes | memoryview) -> bytes:
    """The SHA-256 digest of ``data``, hashed with the GIL held."""
    view = memoryview(data).cast("B")
    h = hashlib.sha256()
    for start in range(0, len(view), PIECE):
        h.update(view[start : start + PIECE])
    return h.digest()
