"""The fake API server's state: objects, one resourceVersion counter, the event history.

It behaves as etcd behind a kube-apiserver does where clients can tell: every
write takes the next global resourceVersion, watches replay the history after
a resourceVersion until compact() drops it (then 410 Gone), updates with a
stale resourceVersion conflict, generation counts spec changes only, and a
status subresource isolates .status from the rest. Thread-safe: the HTTP
server runs in its own thread while tests call in directly.
"""

from __future__ import annotations

import bisect
import copy
import datetime
import random
import string
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .resources import BUILTIN, Registry, Resource, from_crd, gateway_api_resources

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
# Runs on every write before it is stored: (resource, new object, old object or None on create,
# strict unknown fields) -> the object to store.
Admission = Callable[["Resource", Obj, "Obj | None", bool], Obj]


class ApiError(Exception):
    """An error the API server answers with a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', _details(resource, name))


def _details(resource: Resource, name: str) -> Obj:
    return {"name": name, "group": resource.group, "kind": resource.plural}


def conflict(resource: Resource, name: str, why: str = "") -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource.qualified} "{name}": {why}', _details(resource, name))


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


@dataclass(frozen=True)
class Event:
    """One committed change, as a watch sends it (object stored as written, never mutated)."""

    rv: int
    resource: Resource
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj
    previous: Obj | None = None  # the object before a MODIFIED, so selector watches see it leave


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Obj) -> Obj:
    """What generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """All objects of all resources, versioned like etcd."""

    namespace_deletion_delay = 0.2  # seconds a deleted namespace stays Terminating

    def __init__(self, admit: Admission | None = None) -> None:
        self._admit = admit or (lambda resource, obj, old, strict: obj)
        self.registry = Registry(BUILTIN + gateway_api_resources())
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[Key, Obj]] = {}
        self._rv = 0
        self._compacted = 0
        self._history: list[Event] = []
        self._history_rvs: list[int] = []
        self._listeners: list[Callable[[], None]] = []
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.registry.lookup("namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # -- bookkeeping -----------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    @property
    def compacted(self) -> int:
        with self._lock:
            return self._compacted

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from the writer's thread) after every committed change."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def compact(self, rv: int | None = None) -> int:
        """Forget the history up to ``rv`` (default: now); older watch resourceVersions get 410."""
        with self._lock:
            target = self._rv if rv is None else min(rv, self._rv)
            self._compacted = max(self._compacted, target)
            cut = bisect.bisect_right(self._history_rvs, self._compacted)
            del self._history[:cut]
            del self._history_rvs[:cut]
            return self._compacted

    def events_after(self, rv: int) -> tuple[list[Event], int]:
        """The events after ``rv`` and the resourceVersion they bring a watcher up to.

        Raises 410 Gone if ``rv`` is older than the compaction point.
        """
        with self._lock:
            if rv < self._compacted:
                raise gone(f"too old resource version: {rv} ({self._compacted})")
            start = bisect.bisect_right(self._history_rvs, rv)
            return self._history[start:], self._rv

    def _commit(self, resource: Resource, kind: str, obj: Obj, previous: Obj | None = None) -> None:
        """Record a change (caller holds the lock and has set metadata.resourceVersion)."""
        self._history.append(Event(self._rv, resource, kind, obj, previous))
        self._history_rvs.append(self._rv)
        for listener in list(self._listeners):
            listener()

    def _register_crd(self, resource: Resource, obj: Obj) -> None:
        """A written CRD serves its kind from now on (at once: no Established condition to wait for)."""
        if resource.group == "apiextensions.k8s.io" and resource.plural == "customresourcedefinitions":
            self.registry.add(from_crd(obj))

    def _bucket(self, resource: Resource) -> dict[Key, Obj]:
        return self._objects.setdefault((resource.group, resource.plural), {})

    # -- reads -----------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        """The stored object itself: callers must not modify it (writes replace, never mutate)."""
        with self._lock:
            obj = self._bucket(resource).get((namespace or "", name))
            if obj is None:
                raise not_found(resource, name)
            return obj

    def list(self, resource: Resource, namespace: str | None = None) -> tuple[list[Obj], int]:
        """Objects (sorted by namespace/name) and the list's resourceVersion."""
        with self._lock:
            bucket = self._bucket(resource)
            keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
            return [bucket[k] for k in keys], self._rv

    # -- writes ----------------------------------------------------------

    def _exists(self, resource: Resource, namespace: str, name: str | None) -> bool:
        return (namespace, name or "") in self._bucket(resource)

    def _check_namespace(self, resource: Resource, obj: Obj, namespace: str | None) -> str:
        meta = obj.setdefault("metadata", {})
        if not resource.namespaced:
            meta.pop("namespace", None)
            return ""
        ns = namespace or meta.get("namespace") or "default"
        if meta.get("namespace") and meta["namespace"] != ns:
            raise ApiError(
                400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
            )
        ns_obj = self._bucket(self.registry.lookup("namespaces")).get(("", ns))
        if ns_obj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        if ns_obj["metadata"].get("deletionTimestamp") and not self._exists(resource, ns, meta.get("name")):
            raise ApiError(
                403,
                "Forbidden",
                f'{resource.qualified} "{meta.get("name", "")}" is forbidden: unable to create new content in '
                f"namespace {ns} because it is being terminated",
            )
        meta["namespace"] = ns
        return ns

    def create(self, resource: Resource, obj: Obj, namespace: str | None = None, strict: bool = False) -> Obj:
        obj = copy.deepcopy(obj)
        with self._lock:
            ns = self._check_namespace(resource, obj, namespace)
            meta = obj["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = meta["generateName"] + suffix
            name = meta.get("name")
            if not name:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{resource.kind}.{resource.group} "" is invalid: '
                    "metadata.name: Required value: name or generateName is required",
                )
            bucket = self._bucket(resource)
            if (ns, name) in bucket:
                raise ApiError(409, "AlreadyExists", f'{resource.qualified} "{name}" already exists', _details(resource, name))
            if resource.has_status:
                obj.pop("status", None)
            for field in ("resourceVersion", "deletionTimestamp", "managedFields"):
                meta.pop(field, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            obj.setdefault("apiVersion", resource.api_version())
            obj.setdefault("kind", resource.kind)
            obj = self._admit(resource, obj, None, strict)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            bucket[(ns, name)] = obj
            self._commit(resource, "ADDED", obj)
            self._register_crd(resource, obj)
            return obj

    def update(
        self, resource: Resource, obj: Obj, namespace: str | None = None, subresource: str | None = None, strict: bool = False
    ) -> Obj:
        """PUT: replace the object (or only its .status through the status subresource)."""
        obj = copy.deepcopy(obj)
        with self._lock:
            ns = self._check_namespace(resource, obj, namespace)
            name = obj["metadata"].get("name", "")
            old = self.get(resource, ns, name)
            wanted_rv = obj["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            return self._replace(resource, old, obj, subresource, strict)

    def _replace(self, resource: Resource, old: Obj, new: Obj, subresource: str | None, strict: bool = False) -> Obj:
        """Store ``new`` over ``old`` with server-owned fields kept (caller holds the lock)."""
        if subresource == "status":
            if not resource.has_status:
                raise not_found(resource, old["metadata"]["name"])
            status = new.get("status")
            new = {k: v for k, v in old.items() if k != "status"}
            if status is not None:
                new["status"] = copy.deepcopy(status)
            new["metadata"] = dict(old["metadata"])
        elif resource.has_status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = old["status"]
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "resourceVersion"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        new = self._admit(resource, new, old, strict)
        meta = new["metadata"]
        if new == old:
            return old  # a no-op write commits nothing, as the real server
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._bucket(resource)[(meta.get("namespace", ""), meta["name"])] = new
        self._commit(resource, "MODIFIED", new, old)
        self._register_crd(resource, new)
        return new

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], Obj],
        subresource: str | None = None,
        strict: bool = False,
    ) -> Obj:
        """Apply ``change`` (a patch function) to the current object atomically.

        A metadata.resourceVersion the patch sets is a precondition, as on the real server.
        """
        with self._lock:
            old = self.get(resource, namespace, name)
            new = change(copy.deepcopy(old))
            wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            if (new.get("metadata") or {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            return self._replace(resource, old, new, subresource, strict)

    def delete(self, resource: Resource, namespace: str | None, name: str, precondition_rv: str | None = None) -> Obj:
        with self._lock:
            old = self.get(resource, namespace, name)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise conflict(
                    resource,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {precondition_rv}, "
                    f"ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
                )
            if resource.plural == "namespaces" and not resource.group:
                return self._terminate_namespace(resource, old)
            return self._delete(resource, old)

    def _delete(self, resource: Resource, old: Obj) -> Obj:
        self._rv += 1
        gone_obj = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self._rv)}}
        del self._bucket(resource)[(old["metadata"].get("namespace", ""), old["metadata"]["name"])]
        self._commit(resource, "DELETED", gone_obj)
        return gone_obj

    def _terminate_namespace(self, resource: Resource, old: Obj) -> Obj:
        """A namespace goes Terminating at once and disappears with its objects a moment later,
        in the background as on a real cluster (so `kubectl delete -f` of a folder holding the
        namespace still finds the objects it deletes next)."""
        if old["metadata"].get("deletionTimestamp"):
            return old
        self._rv += 1
        terminating = {
            **old,
            "metadata": {**old["metadata"], "deletionTimestamp": _now(), "resourceVersion": str(self._rv)},
            "status": {"phase": "Terminating"},
        }
        self._bucket(resource)[("", old["metadata"]["name"])] = terminating
        self._commit(resource, "MODIFIED", terminating, old)
        timer = threading.Timer(self.namespace_deletion_delay, self._finish_namespace, (resource, old["metadata"]["name"]))
        timer.daemon = True
        timer.start()
        return terminating

    def _finish_namespace(self, resource: Resource, name: str) -> None:
        with self._lock:
            for kind in self.registry.all():
                if kind.namespaced:
                    for key in sorted(k for k in self._bucket(kind) if k[0] == name):
                        self._delete(kind, self._bucket(kind)[key])
            namespace = self._bucket(resource).get(("", name))
            if namespace is not None:
                self._delete(resource, namespace)
