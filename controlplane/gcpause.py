"""Pausing Python's cyclic garbage collector around a load or a translation.

Translating 10,000 routes allocates hundreds of thousands of short-lived, acyclic objects, and
the collector's generation scans over them cost more than the translation itself (measured:
0.60 s with the collector on, 0.24 s paused). Reference counting frees them anyway.

What survives a large pause is the config itself: the objects of a folder or a cluster just
read, a Gateway just translated. Left to the collector, they would be scanned three more times
soon after (young, middle and, at 10,000 routes, a 150-500 ms full collection), each scan
holding the interpreter lock, so the event loop stalls for as long, whichever thread the
collection runs in. So a pause that leaves more than ``FREEZE_AFTER`` new objects behind ends
with ``gc.freeze()``: every object alive then is moved out of the collector's sight. They are
still freed by reference counting when a later change drops them; a reference cycle among them
(none were found in loading or translating) would stay until the process ends.

A large pause also ends by handing the C heap's free pages back to the system (glibc's
``malloc_trim``). Loading and translating free far more than they keep (the parsed YAML, the
Envoy messages once serialized), and much of it in blocks malloc, not Python, manages; freed in
the middle of the heap, their pages stay counted in the process's RSS until trimmed (8 MB of
the 65 MB a cold load of 10,000 routes adds). Where there is no glibc this does nothing.

Pauses may overlap (the file loader's thread, the controller's, a Kubernetes listing on the
event loop): the collector runs again when the last one ends.

While a pause lasts, the interpreter's switch interval is also shortened (``SWITCH_INTERVAL``):
the long pauses are CPU-bound Python in a worker thread, and the event loop must get the
interpreter back within a millisecond at each of its wake-ups, not 5. (The 100-300 ms waits of
the loop during a cold load of 10,000 routes, once put down to the interval, were the worker
releasing the interpreter too often: see digest.py. With that fixed, the default 5 ms interval
gave no faster cold start and stalls up to 58 ms, against 20-21 ms at 0.5 ms, in 4 runs each.)
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A one-route change at 10,000 routes leaves about 4,000 new objects; a cold load 120,000 and
# its first translation 170,000.
FREEZE_AFTER = 50_000
SWITCH_INTERVAL = 0.0005  # seconds; sys.getswitchinterval() is 0.005 by default

_lock = threading.Lock()
_pauses = 0  # pauses in progress
_resume = False  # whether the collector was enabled when the first of them began
_interval = 0.0  # the switch interval when the first of them began


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # The process's own libc: find_library would run `ldconfig -p` (on the loop, after a listing).
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim  # CDLL: the call releases the GIL
    except (OSError, AttributeError):  # no glibc (musl, macOS)
        return None
    return trim


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's default, made fixed


def map_large_blocks() -> None:
    """Have glibc map every block of 128 KiB or more on its own, and unmap it when freed.

    By default the threshold is dynamic: freeing a mapped block raises it to that block's size
    (up to 32 MB). After the first serialized route table of 10,000 routes (5.6 MB) was freed,
    the next ones, and the Envoy pushes' copies of them, came from the heap, whose freed pages
    stay in the RSS. A fixed threshold turns that off; the price is a mapping and its page
    faults for each such block (docs/performance.md, the Kubernetes memory's seventh round)."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # no glibc (musl, macOS)
        pass


def release_heap() -> None:
    """Give the C heap's free pages back to the system (glibc), so that RSS shows what is kept."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextmanager
def paused_gc() -> Iterator[None]:
    global _pauses, _resume, _interval
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
            _interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_interval, SWITCH_INTERVAL))
        _pauses += 1
    large = False
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0:
                sys.setswitchinterval(_interval)
            if _pauses == 0 and _resume:
                large = gc.get_count()[0] > FREEZE_AFTER
                if large:
                    gc.freeze()
                gc.enable()
    if large:
        release_heap()
