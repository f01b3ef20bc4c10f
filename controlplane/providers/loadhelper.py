"""A second core for a cold load: a helper process that reads a large file from its last document back.

Reading a 2.7 MiB file of 10,000 routes is about 0.85 s of Python, which the GIL keeps on one
core. So at a cold start the file provider starts this helper on the largest file before it
reads anything (a fresh interpreter takes about 0.2 s to get going, overlapping the reading;
``mirrorplane serve`` and ``run`` start it earlier still, before their own imports: see
:func:`start_early`), and reads the file from the front as it would alone; the helper reads the
same file's chunks (``yamlread.chunks``) from the last one back. Where the two meet, the reader stops the helper and
takes what it did. The split is decided by how fast each side really went.

The helper runs at the lowest priority (nice 19): it takes only CPU nobody else wants, a core
that would be idle. On a busy machine it does little or nothing and the reader reads alone, at
its own pace; without it, the helper took the reader's own share (CPU is shared between sessions
and control groups, not between processes) and a cold load took up to twice as long. Under a CPU
quota of less than two CPUs (``cpus``) none is started: the two would share the quota.

Nothing of the helper runs in the serving process but a few system calls: no thread reading from
it, no pipe to watch. The two share one unlinked temporary file. The helper appends a record per
chunk it read (the chunk's nodes and validated objects, ``marshal``-ed), then stores, in the
file's first bytes mapped in memory, the lowest chunk index from which on every record is
written. The reader looks at that number before each chunk (a memory read); once it reaches it,
it kills the helper and reads the records in one read, without waiting for it to end (a process
at the lowest priority may wait long for a core even to die on). A chunk with no record is read
by the reader.

The helper hands over only chunks of objects the schema accepts, which read the same anywhere.
Every other chunk (a YAML error, a limit, an invalid object, a skipped kind, a document that is
no object) is left to the reader, which reads it in the file's order and words its error exactly
as without a helper. Whatever goes wrong with the helper (it cannot start, it dies, it read other
bytes than the reader, a bug) costs time only: the reader does the rest itself, and a traceback
the helper printed is logged.

A fresh interpreter running ``main`` of this file, not a fork: the serving process has gRPC's
threads, which a fork does not survive, and a fork would copy its memory.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import marshal
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from . import yamlread
from .yamlread import Limits

log = logging.getLogger("mirrorplane.loadhelper")

# From this size on, the largest file of a cold load is read by a helper process too: a fresh
# interpreter takes about 0.2 s to start, and a megabyte of routes is about 0.3 s of reading.
# Changes are read alone: they read only what changed.
MIN_BYTES = 1 << 20

_HEADER = mmap.PAGESIZE  # the mapped first bytes of the shared file; records follow
# In the header: every chunk from this index on is done and its record written. Native, so that
# it is written and read with one memcpy each: one aligned 8-byte store and load, never torn.
_LOW = struct.Struct("q")
_RECORD = struct.Struct("<qQ")  # a record's chunk index (-1: the file's digest) and length
_NOTHING_DONE = 2**62
PYTHON = sys.executable  # the helper's interpreter
# What the helper hands over for a chunk: its nodes, and the validated body of each object of each
# of its documents.
Read = tuple[int, list[list[dict[str, Any]]]]

# The helper: this very package, and its dependencies where this process found them.
_START = (
    f"import sys; sys.path[:0] = {[str(Path(__file__).resolve().parents[2]), *filter(None, sys.path)]!r}; "
    f"import {__name__} as helper; helper.main()"
)


def cpus(cgroups: Path = Path("/proc/self/cgroup"), fs: Path = Path("/sys/fs/cgroup")) -> float:
    """How many CPUs this process may keep busy at once: the CPUs it may run on, capped by the CPU
    quota of its control group or any above it (a container's CPU limit; cgroup v2 or v1). Under
    a quota a helper's CPU is the reader's: the group is throttled once both together used it."""
    try:
        limit = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)
    try:
        lines = cgroups.read_text().splitlines()
    except OSError:
        return limit
    for line in lines:
        _, controllers, path = line.split(":", 2)
        files: tuple[str, ...]
        if controllers == "":  # v2: "quota period" or "max period"
            mount, files = fs, ("cpu.max",)
        elif "cpu" in controllers.split(","):  # v1
            mount, files = fs / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        group = mount / path.lstrip("/")
        if not group.is_dir():  # a container's own view: its group is the mount's root
            group = mount
        for level in (group, *group.parents):
            with contextlib.suppress(OSError, ValueError):  # no such file, or "max": no quota there
                quota, period = map(int, " ".join(level.joinpath(f).read_text() for f in files).split())
                if quota > 0 and period > 0:
                    limit = min(limit, quota / period)
            if level == mount:
                break
    return limit


def candidate(paths: Iterable[Path], wanted: bool | None = None) -> Path | None:
    """The file of a cold load a helper reads too: the largest, if it has :data:`MIN_BYTES` or
    more and a second CPU is to be had (``wanted``: True always, False never)."""
    if wanted is False:
        return None
    with contextlib.suppress(OSError):
        size, path = max(((p.stat().st_size, p) for p in paths), default=(0, None))
        if path is not None and (wanted or (size >= MIN_BYTES and cpus() >= 2)):
            return path
    return None


# A helper the command started before its own imports (start_early), until a load takes it over.
_early: Helper | None = None


def start_early(root: Path, limits: Limits) -> None:
    """Start the helper of ``root``'s cold load now. The command does this before it imports the
    rest of the program (gRPC, Envoy's messages, the web server: about 0.4 s of one core), so a
    large file is being read on the second core meanwhile; the file provider's first load takes
    the helper over (:func:`adopt`). Nothing is said if it cannot start: the load says it."""
    global _early
    try:
        path = candidate(yamlread.yaml_files(root))
        if path is not None:
            _early = Helper(path, limits)
    except OSError:  # no folder to list, no process to be had: the load finds it, and says it
        pass
    except Exception:  # a bug, which must not stop the command: its own load starts a helper
        log.exception("loadhelper.early_failed root=%s then=load_starts_its_own", root)


def adopt(path: Path | None, limits: Limits) -> Helper | None:
    """The helper started early, if it reads ``path`` under ``limits``; any other is stopped (its
    file is not this load's largest, or the limits differ). Taken once."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if path is not None and early.path.resolve() == path.resolve() and early.limits == limits:
        return early
    early.close()
    return None


class Helper:
    """A helper process reading ``path`` from its last chunk back (see the module docstring)."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self.taken = 0  # chunks whose documents came from the helper
        self._records: dict[int, bytes] | None = None  # once met
        self._stopped = False
        self._shared = tempfile.TemporaryFile()
        try:
            self._shared.truncate(_HEADER)
            self._low = mmap.mmap(self._shared.fileno(), _HEADER)
            _LOW.pack_into(self._low, 0, _NOTHING_DONE)
            fd = self._shared.fileno()
            limit_args = [str(limits.max_bytes), str(limits.max_depth), str(limits.max_nodes)]
            self._process = subprocess.Popen(
                [PYTHON, "-I", "-c", _START, str(fd), os.fspath(path), *limit_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,  # a traceback, logged here
                pass_fds=(fd,),
            )
            with contextlib.suppress(OSError):  # it has only started: what it does not do, the reader does
                os.setpriority(os.PRIO_PROCESS, self._process.pid, 19)
        except BaseException:
            if hasattr(self, "_low"):
                self._low.close()
            self._shared.close()
            raise

    def take(self, index: int, digest: bytes) -> Read | None:
        """The nodes and validated documents of chunk ``index`` of the file whose bytes have
        ``digest``, if the helper read it; else None: read it yourself. Once the reader reaches
        what the helper did, the helper is stopped and its records read."""
        if self._records is None:
            if index < _LOW.unpack_from(self._low)[0]:
                return None
            try:
                self._records = self._collect(digest)
            except Exception:  # a bug here: said, and the reader does the rest
                log.exception("loadhelper.failed source=%s then=read_alone", self.path)
                self._records = {}
        payload = self._records.get(index)
        if payload is None:
            return None
        try:
            read: Read = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):  # a bug: said, and the reader reads the chunk
            log.exception("loadhelper.failed source=%s chunk=%d then=read_alone", self.path, index)
            return None
        self.taken += 1
        return read

    def _collect(self, digest: bytes) -> dict[int, bytes]:
        """The records the helper had written when it said how far it got, without waiting for it
        to end: at the lowest priority on a busy machine, even dying can wait for a core."""
        low = _LOW.unpack_from(self._low)[0]
        self._stop()
        size = os.fstat(self._shared.fileno()).st_size
        data = os.pread(self._shared.fileno(), size - _HEADER, _HEADER)
        records: dict[int, bytes] = {}
        offset = 0
        while offset + _RECORD.size <= len(data):
            index, length = _RECORD.unpack_from(data, offset)
            offset += _RECORD.size
            # Records come in the order written: past the hint read above, what follows may be
            # partly written yet.
            if index < low and index != -1 or offset + length > len(data):
                break
            records[index] = data[offset : offset + length]
            offset += length
        read = records.pop(-1, None)
        if read is not None and read != digest:  # the file changed between the two reads
            log.info("loadhelper.discarded source=%s reason=%s", self.path, "file_changed")
            return {}
        return records

    def _stop(self) -> None:
        """Kill the helper. Its end (and any traceback it printed) is waited for in a thread, not
        here: a process at the lowest priority may wait long for a core to die on."""
        if self._stopped:
            return
        self._stopped = True
        if self._process.poll() is not None:
            self._reap()
        else:
            self._process.kill()
            threading.Thread(target=self._reap, name="loadhelper-reap", daemon=True).start()

    def _reap(self) -> None:
        assert self._process.stderr is not None
        with self._process.stderr as stderr:
            said = stderr.read().decode("utf-8", "replace").strip()
        self._process.wait()
        if said:  # a bug in the helper: its traceback
            log.error("loadhelper.failed source=%s then=read_alone traceback=%r", self.path, said)

    def close(self) -> None:
        """Stop the helper, whatever it is doing: what it has not handed over is done already, or never needed."""
        self._stop()
        if not self._low.closed:
            self._low.close()
        self._shared.close()
        log.info("loadhelper.done source=%s chunks_taken=%d", self.path, self.taken)


def read_chunk(chunk: yamlread.Chunk, text: str, limits: Limits) -> bytes | None:
    """What the helper hands over for one chunk: its nodes and the validated body of each
    object of each of its documents (``marshal``-ed), or None when the chunk is left to the
    reader (see the module docstring)."""
    from ..gatewayapi import schema  # the helper's side only: the command imports this module early (start_early)

    try:
        nodes, docs = yamlread.load(chunk, text, limits)
    except (yaml.YAMLError, yamlread.RejectedError):
        return None
    documents = []
    for doc in docs:
        bodies = []
        for item in yamlread.items(doc):
            if not yamlread.is_object(item) or not schema.supported(item["apiVersion"], item["kind"]):
                return None
            try:
                bodies.append(schema.validate(item))
            except schema.ValidationError:
                return None
        documents.append(bodies)
    try:
        return marshal.dumps((nodes, documents))
    except ValueError:  # a value marshal does not carry (a date): the reader reads it
        return None


def _serve(shared: int, path: str, limits: Limits) -> None:
    """The helper's side: the file's chunks from the last one back, a record for each it read."""
    from ..gatewayapi import schema

    parent = os.getppid()
    low = mmap.mmap(shared, _HEADER)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            return
        text = yamlread.decode(data)
        chunks = yamlread.chunks(text, limits)
    except (OSError, yamlread.RejectedError):  # the reader finds it too, and says it
        return
    offset = _write(shared, _HEADER, -1, yamlread.file_digest(data))
    with schema.remembering():  # the fields the file's objects repeat, validated once
        for index in reversed(range(len(chunks))):
            if os.getppid() != parent:  # the reader is gone
                return
            try:
                payload = read_chunk(chunks[index], text, limits)
            except Exception:  # noqa: BLE001 - a bug: printed for the reader to log, which reads this chunk itself
                traceback.print_exc()
                payload = None
            if payload is not None:
                offset = _write(shared, offset, index, payload)
            _LOW.pack_into(low, 0, index)


def _write(fd: int, offset: int, index: int, payload: bytes) -> int:
    record = _RECORD.pack(index, len(payload)) + payload
    if os.pwrite(fd, record, offset) != len(record):  # the disk is full: said, and the reader does the rest
        raise OSError(f"wrote part of a record of {len(record)} bytes")
    return offset + len(record)


def main() -> None:
    """The helper process: ``shared-fd path max-bytes max-depth max-nodes``. A short-lived
    process that only allocates: the collector's scans would be pure cost."""
    gc.disable()
    shared, path, *limits = sys.argv[1:]
    _serve(int(shared), path, Limits(*map(int, limits)))
