"""A second core for a large load: a helper process that works through the same list from the end.

Parsing and validating a 2.7 MiB file of 10,000 routes is about a second of Python in one
thread, and the GIL keeps it on one core while the others idle. So for a large load the
caller starts a helper process, hands it every item, and keeps working from the first item on;
the helper works from the last item back and sends its results in small batches. Where the two
meet, the caller takes the helper's results and stops it. How the work splits is decided by how
fast each side goes, so a busy core or a slow start (a fresh interpreter: about 0.2 s) costs
only the helper's share. On a machine with no idle core it would only take the caller's own
share of the CPU, so the caller asks first (``idle_core``). Whatever goes wrong in the helper (it cannot start, an item fails in
it, it dies) costs time only: the caller does those items itself, as it would without a helper.

The helper is a fresh interpreter running ``main`` of this very file, not a fork: the serving
process has gRPC's threads, which a fork does not survive. Its errors go to the caller's stderr. The work is a function
named ``module:name`` and must return something pickle carries; None means "leave this item to
the caller". The pipe carries pickles between this process and the child it started, nothing else.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("mirrorplane.loadhelper")

_FRAME = struct.Struct("!Q")  # the length of the pickle that follows
BATCH_SECONDS = 0.01  # the helper sends what it has done at least this often: the caller takes nothing unsent


def idle_core() -> bool:
    """Whether a core is likely idle: the 1-minute load average leaves a whole one of the cores
    this process may run on. On a busy machine a helper takes the caller's own share of the
    CPU, and the caller is slower with it than alone (measured: with half a core left, from
    0.6 to 1.14 times the time alone)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return False
    return cores > 1 and load < cores - 1


class Helper:
    """A helper process working through ``items`` from the last one back (see the module docstring)."""

    def __init__(self, function: str, args: tuple[Any, ...], items: Sequence[Any]) -> None:
        self._lock = threading.Lock()
        self._results: dict[int, Any] = {}
        self._low = len(items)  # every item from here on is done, by the helper
        # The very package this process runs, wherever the helper's working directory and path lead.
        root = str(Path(__file__).resolve().parents[2])
        start = f"import sys; sys.path.insert(0, {root!r}); import {__name__} as helper; helper.main()"
        self._process = subprocess.Popen([sys.executable, "-c", start], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            request = pickle.dumps((function, args, list(items)), protocol=pickle.HIGHEST_PROTOCOL)
            self._thread = threading.Thread(target=self._talk, args=(request,), name="load-helper", daemon=True)
            self._thread.start()
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise

    def take(self, index: int) -> Any:
        """The helper's result for item ``index`` if it has done it already, else None: do it yourself."""
        with self._lock:
            return self._results.get(index) if index >= self._low else None

    def _talk(self, request: bytes) -> None:
        """Send the request, then collect what the helper sends, until it ends or is stopped."""
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            with self._process.stdin as stdin:
                stdin.write(request)
            while frame := _read_frame(self._process.stdout):
                done: list[tuple[int, Any]] = pickle.loads(frame)
                with self._lock:
                    self._results.update(done)
                    self._low = min(self._low, *(index for index, _ in done))
        except (OSError, EOFError, pickle.UnpicklingError):  # stopped, or died: the caller does the rest
            pass
        except Exception:  # a bug: said, and the caller does the rest
            log.exception("loadhelper.failed")

    def close(self) -> None:
        """Stop the helper, whatever it is doing: what it has not sent is done already, or never needed."""
        self._process.kill()
        self._process.wait()
        self._thread.join()
        assert self._process.stdout is not None
        self._process.stdout.close()
        log.debug("loadhelper.done items_taken_from_helper=%d", len(self._results))


def _read_frame(stream: IO[bytes]) -> bytes:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return b""
    (size,) = _FRAME.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the helper stopped in the middle of a result")
    return body


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The helper's side: the items from the last back, a batch of results every BATCH_SECONDS."""
    function, args, items = pickle.load(stdin)
    module, _, name = function.partition(":")
    work = getattr(importlib.import_module(module), name)
    batch: list[tuple[int, Any]] = []
    sent = time.monotonic()
    for index in reversed(range(len(items))):
        try:
            result = work(items[index], *args)
        except Exception:  # noqa: BLE001 - the caller does this item again, and reports what it finds
            result = None
        batch.append((index, result))
        if index == 0 or time.monotonic() - sent >= BATCH_SECONDS:
            frame = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.write(_FRAME.pack(len(frame)) + frame)
            stdout.flush()
            batch, sent = [], time.monotonic()


def main() -> None:
    """The helper process. A short-lived process that only allocates: the collector's scans would
    be pure cost. The caller logs what its own items give; the helper's log lines would repeat them."""
    gc.disable()
    logging.disable()
    _serve(sys.stdin.buffer, sys.stdout.buffer)
