"""The file provider: a folder of Kubernetes YAML, watched, as the store's source.

Each file is read and validated on its own, so one broken file never hides the others; and a
file that breaks after having been good keeps its last good objects until it is fixed, so a typo
while editing never takes traffic away from an Envoy. Whatever goes wrong while reading one file
(a limit of ``yamlread.Limits``, bad encoding, or a bug) rejects that file alone, named, with the
reason.

Reading runs in one worker thread, never on the event loop: ADS, the admin API and health keep
answering while a large folder loads; at a cold start a large file is read by a helper process
too, from its end (``loadhelper``). Documents whose text did not change since the last read
(a hash per document, ``yamlread.chunks``) are neither parsed nor validated again, and a burst of
writes across files reaches the store as one update once it settles (``settle_ms``). See
docs/loading.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import platform  # noqa: F401 - so does awatch's check for WSL (imported by the CEL library's CLI before cellib)
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio._backends._asyncio  # noqa: F401 - awatch's first step imports it (15-40 ms) on the event loop otherwise
import yaml
from watchfiles import awatch

from ..errors import SourceError
from ..gatewayapi import schema
from ..gatewayapi.model import K8sObject, from_dict
from ..gatewayapi.store import Store
from ..gcpause import paused_gc
from . import loadhelper, yamlread
from .base import OnChange, deliver
from .yamlread import SUFFIXES, Limits, yaml_files

log = logging.getLogger("mirrorplane.files")

ObjKey = tuple[str, str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class LoadError:
    source: str
    object: str  # "Kind namespace/name", "document N" when the document has no identity, or "file"
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.object}: {self.message}"


@dataclass(frozen=True)
class _Parsed:
    """What one document became, independent of what the file held before: its objects, and the
    objects it failed to give as (identity, reason, key of the object it would replace)."""

    objects: tuple[K8sObject[Any], ...] = ()
    failures: tuple[tuple[str, str, ObjKey | None], ...] = ()


@dataclass(frozen=True)
class _Chunk:
    """What one chunk of a file (``yamlread.Chunk``) became: its documents, and the nodes they
    expand to (counted against the file's limit)."""

    nodes: int
    documents: tuple[_Parsed, ...]


@dataclass
class _FileState:
    digest: bytes = b""  # of the file's bytes: the same bytes are not read again
    chunks: dict[bytes, _Chunk] = field(default_factory=dict)  # by chunk digest
    objects: dict[ObjKey, K8sObject[Any]] = field(default_factory=dict)  # the last good ones
    errors: list[LoadError] = field(default_factory=list)


def parse_text(
    text: str,
    source: str,
    *,
    previous: dict[ObjKey, K8sObject[Any]] | None = None,
    limits: Limits = Limits(),
) -> tuple[dict[ObjKey, K8sObject[Any]], list[LoadError]]:
    """Parse one file's multi-document YAML into validated objects.

    ``previous`` holds the file's last good objects: an object that fails validation keeps its
    previous version, and a file that does not parse at all keeps all of them.
    """
    state = _FileState(objects=dict(previous or {}))
    with schema.remembering():  # the fields the file's objects repeat, validated once
        _update(state, text, source, limits)
    return state.objects, state.errors


def _update(
    state: _FileState,
    text: str,
    source: str,
    limits: Limits,
    take: Callable[[int], loadhelper.Read | None] | None = None,
) -> None:
    """Read ``text`` into ``state``, reusing the chunks it already knows by digest, and what a
    load helper read (``take``: the nodes and validated bodies of the chunk at an index, or
    None). The helper's chunks count against the node limit here, in the file's order."""
    known = state.chunks
    parsed: dict[bytes, _Chunk] = {}
    index = 0  # of the document in the file
    try:
        chunks = yamlread.chunks(text, limits)
        budget = limits.max_nodes  # what the file's nodes may still come to, repeated chunks included
        for position, c in enumerate(chunks):
            chunk = parsed.get(c.digest) or known.get(c.digest)
            if chunk is None and take is not None:
                chunk = _from_helper(take(position), source)
            if chunk is None:
                # Validated as soon as built, so that the file's parsed YAML never exists whole
                # next to its validated copy (peak memory).
                nodes, docs = yamlread.load(c, text, limits, budget)
                chunk = _Chunk(nodes, tuple(_parse_document(doc, index + i, source) for i, doc in enumerate(docs)))
            elif chunk.nodes > budget:
                raise yamlread.RejectedError(f"more than {limits.max_nodes} nodes once aliases are expanded")
            budget -= chunk.nodes
            parsed[c.digest] = chunk
            index += len(chunk.documents)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        state.errors = [LoadError(source, "file", f"YAML does not parse{at}: {problem}")]
        return
    except yamlread.RejectedError as exc:
        state.errors = [LoadError(source, "file", f"rejected: {exc}")]
        return
    previous, objects, errors = state.objects, {}, []
    for c in chunks:
        for result in parsed[c.digest].documents:
            for obj in result.objects:
                objects[obj.key] = obj
            for ident, message, key in result.failures:
                errors.append(LoadError(source, ident, message))
                if key is not None and key in previous and key not in objects:
                    objects[key] = previous[key]
    state.chunks, state.objects, state.errors = parsed, objects, errors


def _from_helper(read: loadhelper.Read | None, source: str) -> _Chunk | None:
    """A chunk as the load helper read it, or None: read it here (where whatever fails is said)."""
    if read is None:
        return None
    try:
        nodes, documents = read
        return _Chunk(nodes, tuple(_Parsed(tuple(from_dict(b, source=source) for b in d)) for d in documents))
    except Exception:  # noqa: BLE001 - read here again, where an object that fails is rejected alone and logged
        return None


def _parse_document(doc: Any, index: int, source: str) -> _Parsed:
    objects: list[K8sObject[Any]] = []
    failures: list[tuple[str, str, ObjKey | None]] = []
    for item in yamlread.items(doc):
        if not yamlread.is_object(item):
            failures.append(
                (f"document {index + 1}", "not a Kubernetes object (apiVersion and kind are required)", None)
            )
            continue
        ident = _identity(item)
        try:
            if not schema.supported(item["apiVersion"], item["kind"]):
                log.debug("file.skip source=%s object=%r reason=%s", source, ident, "kind not read by mirrorplane")
                continue
            objects.append(from_dict(schema.validate(item), source=source))
        except schema.ValidationError as exc:
            failures.append((ident, str(exc), _key_of(item)))
        except Exception as exc:  # a bug, or input no limit foresaw: reject this object, loudly
            log.exception("file.object_failed source=%s object=%r", source, ident)
            failures.append((ident, f"could not be read ({type(exc).__name__}: {exc})", _key_of(item)))
    return _Parsed(tuple(objects), tuple(failures))


def _identity(doc: dict[str, Any]) -> str:
    meta = m if isinstance(m := doc.get("metadata"), dict) else {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')} {f'{ns}/' if ns else ''}{meta.get('name', '(no name)')}"


def _key_of(doc: dict[str, Any]) -> ObjKey:
    meta = m if isinstance(m := doc.get("metadata"), dict) else {}
    cluster_scoped = doc.get("kind") in ("GatewayClass", "Namespace")
    return (
        str(doc.get("kind")),
        "" if cluster_scoped else str(meta.get("namespace") or "default"),
        str(meta.get("name")),
    )


class FileProvider:
    """Holds the last good objects of every file under a folder and rebuilds the store on change.

    ``settle_ms``: a change reaches the store once no file changed for this long (a burst of
    writes becomes one update); ``max_wait_ms``: ... or at the latest this long after the first
    change of a burst that never settles. ``helper``: whether a cold load has a helper process read
    its largest file too (None: if it has ``loadhelper.MIN_BYTES`` or more).
    """

    def __init__(
        self,
        root: Path,
        *,
        limits: Limits = Limits(),
        settle_ms: int = 5,
        max_wait_ms: int = 1000,
        helper: bool | None = None,
    ) -> None:
        # Absolute, so that the paths found at start and the watcher's (always absolute) events
        # name the same file; not resolved, so that a symlinked folder keeps its name in logs.
        self.root = Path(os.path.abspath(root))
        self.limits = limits
        self.settle_ms = settle_ms
        self.max_wait_ms = max_wait_ms
        self.helper = helper
        self._state: dict[Path, _FileState] = {}
        self._changes = 0  # counts loads that changed some file's objects or errors
        self._worker: ThreadPoolExecutor | None = None
        self.watching = asyncio.Event()  # set once a watch sees every change from then on

    @property
    def errors(self) -> dict[Path, list[LoadError]]:
        return {path: state.errors for path, state in self._state.items()}

    def describe(self) -> str:
        return str(self.root)

    async def start(self) -> Store:
        if not self.root.exists():
            raise SourceError(f"{self.root} does not exist: give a folder (or file) of Gateway API YAML")
        return await self._off_loop(self.load)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="file-loader")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def load(self, paths: Iterable[Path] | None = None) -> Store:
        """(Re)load the given files (all when None; a missing file is a deletion) and return the store.

        The cyclic garbage collector is paused meanwhile: parsing and validating allocate
        hundreds of thousands of short-lived acyclic objects, and its scans over them cost more
        than the work itself (the 5,000-route figure in docs/loading.md halves)."""
        with paused_gc(), schema.remembering():  # the fields the files' objects repeat, validated once
            return self._load(paths)

    def _load(self, paths: Iterable[Path] | None) -> Store:
        helper = None
        if paths is None:
            current = set(yaml_files(self.root))
            if not self._state:  # a cold load
                helper = self._start_helper(current)
            for gone in set(self._state) - current:
                self._forget(gone)
            paths = sorted(current)
        try:
            for path in paths:
                self._load_file(Path(path), helper)
        finally:
            if helper is not None:
                helper.close()
        return self.store()

    def _start_helper(self, paths: Iterable[Path]) -> loadhelper.Helper | None:
        """A helper for the largest file of a cold load, started before reading anything: its
        start overlaps the reading. One the command started ahead of its imports for this very
        file is taken over (``loadhelper.start_early``)."""
        path = loadhelper.candidate(paths, self.helper)
        early = loadhelper.adopt(path, self.limits)
        if early is not None or path is None:
            return early
        try:
            return loadhelper.Helper(path, self.limits)
        except OSError as exc:  # no process to be had (limits, a sandbox): read alone
            log.warning("file.helper_unavailable source=%s error=%r then=read_alone", path, str(exc))
        except Exception:  # a bug, which must not cost the load: read alone, and say it
            log.exception("file.helper_failed source=%s then=read_alone", path)
        return None

    def store(self) -> Store:
        seen: dict[ObjKey, Path] = {}
        objects = []
        for path in sorted(self._state):
            for key, obj in self._state[path].objects.items():
                if key in seen:
                    log.warning(
                        "file.duplicate object=%r first=%s again=%s winner=again", obj.describe(), seen[key], path
                    )
                seen[key] = path
                objects.append(obj)
        return Store.from_objects(objects)

    def _forget(self, path: Path) -> None:
        if self._state.pop(path, None) is not None:
            self._changes += 1
            log.info("file.removed source=%s", path)

    def _read(self, path: Path) -> bytes:
        """The file's text, refusing one over the size limit before reading it whole."""
        with path.open("rb") as f:
            data = f.read(self.limits.max_bytes + 1)
        if len(data) > self.limits.max_bytes:
            raise yamlread.RejectedError(f"larger than {self.limits.max_bytes} bytes")
        return data

    def _load_file(self, path: Path, helper: loadhelper.Helper | None = None) -> None:
        state = self._state.get(path)
        try:
            data = self._read(path)
        except FileNotFoundError:
            self._forget(path)
            return
        except IsADirectoryError:
            return
        except (OSError, yamlread.RejectedError) as exc:
            self._reject(
                path, state, f"unreadable: {exc.strerror or exc}" if isinstance(exc, OSError) else f"rejected: {exc}"
            )
            return
        digest = yamlread.file_digest(data)
        if state is not None and state.digest == digest:
            return
        take = (
            functools.partial(helper.take, digest=digest) if helper and helper.path == path and state is None else None
        )
        state = state or _FileState()
        had = state.objects
        try:
            _update(state, yamlread.decode(data), str(path), self.limits, take)
        except yamlread.RejectedError as exc:
            state.errors = [LoadError(str(path), "file", f"rejected: {exc}")]
        except Exception as exc:  # a bug, or input no limit foresaw: reject this file, loudly
            log.exception("file.failed source=%s", path)
            state.errors = [LoadError(str(path), "file", f"could not be read ({type(exc).__name__}: {exc})")]
        state.digest = digest
        self._state[path] = state
        self._changes += 1
        self._log_errors(state, had)

    def _reject(self, path: Path, state: _FileState | None, message: str) -> None:
        state = state or _FileState()
        state.digest, state.errors = b"", [LoadError(str(path), "file", message)]
        self._state[path] = state
        self._changes += 1
        self._log_errors(state, state.objects)

    @staticmethod
    def _log_errors(state: _FileState, had: dict[ObjKey, K8sObject[Any]]) -> None:
        kept_names = {o.describe() for o in had.values() if state.objects.get(o.key) is o}
        for err in state.errors:
            kept = err.object in kept_names or (err.object == "file" and bool(state.objects))
            log.error(
                "file.invalid source=%s object=%r error=%r%s",
                err.source,
                err.object,
                err.message,
                " (serving its last good version until fixed)" if kept else "",
            )

    async def watch(self, on_change: OnChange) -> None:
        """Watch the folder and call ``on_change`` with a new store after every burst of changes.

        Once the watcher is in place, the folder is rescanned (files whose bytes did not change
        cost a read and a hash): what changed between ``start`` and now, or while a failed watch
        was restarting, is not lost.
        """
        watcher = awatch(self.root, debounce=self.max_wait_ms, step=self.settle_ms, recursive=True)
        batch = asyncio.ensure_future(anext(watcher))
        try:
            await asyncio.sleep(0)  # awatch sets up its watches before it first awaits: from here on nothing is missed
            await self._reload(None, on_change)
            self.watching.set()
            while True:
                paths = sorted({Path(p) for _, p in await batch if Path(p).suffix in SUFFIXES})
                batch = asyncio.ensure_future(anext(watcher))
                if paths:
                    await self._reload(paths, on_change)
        finally:
            self.watching.clear()
            batch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch
            await watcher.aclose()

    async def _reload(self, paths: list[Path] | None, on_change: OnChange) -> None:
        changes = self._changes
        store = await self._off_loop(self.load, paths)
        if self._changes != changes:
            await deliver(on_change, store)
