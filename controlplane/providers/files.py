"""The file provider: a folder of Kubernetes YAML, watched, as the store's source.

Each file is parsed and validated on its own, so one broken file never hides the others; and a
file that breaks after having been good keeps its last good objects until it is fixed, so a typo
while editing never takes traffic away from an Envoy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from watchfiles import awatch

from ..errors import SourceError
from ..gatewayapi import schema
from ..gatewayapi.model import K8sObject, from_dict
from ..gatewayapi.store import Store
from .base import OnChange

log = logging.getLogger("mirrorplane.files")

SUFFIXES = (".yaml", ".yml")
ObjKey = tuple[str, str, str]


@dataclass(frozen=True)
class LoadError:
    source: str
    object: str  # "Kind namespace/name", or "document N" when the document has no identity
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.object}: {self.message}"


def parse_text(
    text: str, source: str, *, previous: dict[ObjKey, K8sObject[Any]] | None = None
) -> tuple[dict[ObjKey, K8sObject[Any]], list[LoadError]]:
    """Parse one file's multi-document YAML into validated objects.

    ``previous`` holds the file's last good objects: an object that fails validation keeps its
    previous version, and a file that does not parse at all keeps all of them.
    """
    previous = previous or {}
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return dict(previous), [LoadError(source, "file", f"YAML does not parse{at}: {problem}")]
    objects: dict[ObjKey, K8sObject[Any]] = {}
    errors: list[LoadError] = []
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            items = doc["items"]
        else:
            items = [doc]
        for item in items:
            _parse_one(item, index, source, previous, objects, errors)
    return objects, errors


def _parse_one(
    doc: Any,
    index: int,
    source: str,
    previous: dict[ObjKey, K8sObject[Any]],
    objects: dict[ObjKey, K8sObject[Any]],
    errors: list[LoadError],
) -> None:
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        errors.append(LoadError(source, f"document {index + 1}", "not a Kubernetes object (apiVersion and kind are required)"))
        return
    ident = _identity(doc)
    if not schema.supported(doc["apiVersion"], doc["kind"]):
        log.debug("file.skip source=%s object=%r reason=%s", source, ident, "kind not read by mirrorplane")
        return
    try:
        obj = from_dict(schema.validate(doc), source=source)
    except schema.ValidationError as exc:
        errors.append(LoadError(source, ident, str(exc)))
        key = _key_of(doc)
        if key in previous:
            objects[key] = previous[key]
        return
    objects[obj.key] = obj


def _identity(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')} {ns + '/' if ns else ''}{meta.get('name', '(no name)')}"


def _key_of(doc: dict[str, Any]) -> ObjKey:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    cluster_scoped = doc.get("kind") in ("GatewayClass", "Namespace")
    return (str(doc.get("kind")), "" if cluster_scoped else (meta.get("namespace") or "default"), str(meta.get("name")))


def yaml_files(root: Path) -> list[Path]:
    """Every YAML file under root (recursively), in a stable order: later files win duplicates."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


class FileProvider:
    """Holds the last good objects of every file under a folder and rebuilds the store on change."""

    def __init__(self, root: Path, *, debounce_ms: int = 10) -> None:
        self.root = Path(root)
        self.debounce_ms = debounce_ms
        self._files: dict[Path, dict[ObjKey, K8sObject[Any]]] = {}
        self.errors: dict[Path, list[LoadError]] = {}

    def describe(self) -> str:
        return str(self.root)

    async def start(self) -> Store:
        if not self.root.exists():
            raise SourceError(f"{self.root} does not exist: give a folder (or file) of Gateway API YAML")
        return self.load()

    def load(self, paths: Iterable[Path] | None = None) -> Store:
        """(Re)load the given files (all when None; a missing file is a deletion) and return the store."""
        if paths is None:
            current = set(yaml_files(self.root))
            for gone in set(self._files) - current:
                self._forget(gone)
            paths = sorted(current)
        for path in paths:
            self._load_file(Path(path))
        return self.store()

    def store(self) -> Store:
        seen: dict[ObjKey, Path] = {}
        objects = []
        for path in sorted(self._files):
            for key, obj in self._files[path].items():
                if key in seen:
                    log.warning("file.duplicate object=%r first=%s again=%s winner=again", obj.describe(), seen[key], path)
                seen[key] = path
                objects.append(obj)
        return Store.from_objects(objects)

    def _forget(self, path: Path) -> None:
        if self._files.pop(path, None) is not None:
            log.info("file.removed source=%s", path)
        self.errors.pop(path, None)

    def _load_file(self, path: Path) -> None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            self._forget(path)
            return
        except (OSError, UnicodeDecodeError) as exc:
            log.error("file.unreadable source=%s error=%r kept=last_good_objects", path, str(exc))
            return
        previous = self._files.get(path) or {}
        objects, errors = parse_text(text, str(path), previous=previous)
        self._files[path] = objects
        self.errors[path] = errors
        kept_names = {o.describe() for o in previous.values() if previous.get(o.key) is objects.get(o.key)}
        for err in errors:
            kept = err.object in kept_names or (err.object == "file" and bool(previous))
            log.error(
                "file.invalid source=%s object=%r error=%r%s",
                err.source,
                err.object,
                err.message,
                " (serving its last good version until fixed)" if kept else "",
            )

    async def watch(self, on_change: OnChange) -> None:
        """Watch the folder and call ``on_change`` with a new store after every batch of changes.

        watchfiles debounces for 1.6 s by default; a few milliseconds keep save-to-Envoy latency low
        while still grouping the several events an editor's save produces.
        """
        async for changes in awatch(self.root, debounce=self.debounce_ms, step=5, recursive=True):
            paths = sorted({Path(p) for _, p in changes if Path(p).suffix in SUFFIXES})
            if not paths:
                continue
            store = self.load(paths)
            result = on_change(store)
            if asyncio.iscoroutine(result):
                await result
