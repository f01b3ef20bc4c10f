"""The HTTP side of the fake API server: kube-apiserver's REST paths over a Store.

Discovery (legacy, non-aggregated: clients fall back to it), get/list/watch/
create/update/patch/delete on resources and their status subresource, Table
output for kubectl, and metav1.Status errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from . import patches, tables
from .resources import Resource
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import ApiError, Event, Obj, Store

log = logging.getLogger("mirrorplane.fakeapi")

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-mirrorplane-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered, for tests to assert on."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    accept: str
    body: bytes
    status: int

    @property
    def is_watch(self) -> bool:
        return flag(self.query, "watch")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Target:
    """What a resource URL names."""

    resource: Resource
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


@dataclass(eq=False)
class Watcher:
    """One open watch stream; stop() wakes it to end or to be cut."""

    request: web.Request
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cut: bool = False


def flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (kubernetes-asyncio sends "True")."""
    return query.get(name, "") in ("1", "t", "T", "true", "TRUE", "True")


def _number(query: Mapping[str, str], name: str) -> float:
    """A numeric query parameter (0 if absent); garbage is a 400 as on the real server."""
    try:
        return float(query.get(name) or 0)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid {name}: {query[name]!r}") from None


def _strict(query: Mapping[str, str]) -> bool:
    """fieldValidation=Strict: unknown fields are refused instead of dropped (kubectl's default)."""
    return query.get("fieldValidation") == "Strict"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def _error(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


def _as_version(obj: Obj, resource: Resource, version: str) -> Obj:
    """The object as read through ``version`` (all served versions share one schema here)."""
    api_version = resource.api_version(version)
    return obj if obj.get("apiVersion") == api_version else {**obj, "apiVersion": api_version}


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": list(key)}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (data["start"][0], data["start"][1])
    except Exception as exc:  # noqa: BLE001 - any garbage is a bad request
        raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from exc


class ApiApp:
    """aiohttp handlers for one Store. ``bookmark_interval`` is in seconds (real servers: ~60 s)."""

    def __init__(
        self, store: Store, bookmark_interval: float, record: Callable[[RecordedRequest], None], failures: dict[str, int] | None = None
    ) -> None:
        self.store = store
        self.failures = failures if failures is not None else {}
        self.bookmark_interval = bookmark_interval
        self.record = record
        self.watchers: set[Watcher] = set()
        self.closing = False

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._log_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def wake_all(self) -> None:
        for w in list(self.watchers):
            w.wake.set()

    def cut_watches(self) -> None:
        """Drop every open watch connection, as a dying API server does."""
        for w in list(self.watchers):
            w.cut = True
            w.wake.set()

    @web.middleware
    async def _log_middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        if request.method == "GET" and flag(request.query, "watch"):
            # Logged when it opens: a watch may stay open for the whole test.
            self.record(self._recorded(request, body, 200))
            return await handler(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.record(self._recorded(request, body, status))
            log.debug("fakeapi.request method=%s path=%s status=%s", request.method, request.path_qs, status)

    @staticmethod
    def _recorded(request: web.Request, body: bytes, status: int) -> RecordedRequest:
        return RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            content_type=request.headers.get("Content-Type", ""),
            accept=request.headers.get("Accept", ""),
            body=body,
            status=status,
        )

    # -- routing ---------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if self.failures.get(request.path, 0) > 0:
            self.failures[request.path] -= 1
            return _error(ApiError(500, "InternalError", "an error on the server (injected by the test) has prevented the request from succeeding"))
        try:
            if parts == ["version"]:
                return _json(SERVER_VERSION)
            if parts and parts[0] in ("healthz", "readyz", "livez"):
                return web.Response(text="ok")
            if parts == ["api"]:
                return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
            if parts == ["apis"]:
                return _json(self._group_list())
            if len(parts) == 2 and parts[0] == "apis":
                group = self._group(parts[1])
                if group is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return _json({"kind": "APIGroup", "apiVersion": "v1", **group})
            if parts == ["api", "v1"]:
                return _json(self._resource_list("", "v1"))
            if len(parts) == 3 and parts[0] == "apis":
                if not self.store.registry.in_group_version(parts[1], parts[2]):
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return _json(self._resource_list(parts[1], parts[2]))
            target = self._target(parts)
            if target is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return await self._serve(request, target)
        except ApiError as err:
            return _error(err)
        except (SelectorError, patches.PatchFormatError) as err:
            return _error(ApiError(400, "BadRequest", str(err)))
        except patches.PatchError as err:
            return _error(ApiError(422, "Invalid", str(err)))

    def _target(self, parts: list[str]) -> Target | None:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        legacy_watch = bool(rest) and rest[0] == "watch"
        if legacy_watch:
            rest = rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.store.registry.get(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        resource = self.store.registry.get(group, version, rest[0])
        if resource is None:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and (sub != "status" or not resource.has_status):
            return None
        return Target(resource, version, namespace, name, sub, legacy_watch)

    # -- discovery -------------------------------------------------------

    def _group(self, name: str) -> Obj | None:
        """The APIGroup entry of /apis (the body of /apis/{group} adds kind and apiVersion)."""
        versions = self.store.registry.groups().get(name)
        if not versions:
            return None
        preferred = "v1" if "v1" in versions else versions[0]
        return {
            "name": name,
            "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred},
        }

    def _group_list(self) -> Obj:
        groups = [self._group(name) for name in self.store.registry.groups()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = [e for r in self.store.registry.in_group_version(group, version) for e in r.api_resources()]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- REST ------------------------------------------------------------

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        q = request.query
        if t.name is None:
            if method == "GET":
                if t.legacy_watch or flag(q, "watch"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                body = await self._object_body(request)
                created = self.store.create(t.resource, body, t.namespace, strict=_strict(q))
                return _json(self._out(created, t), 201)
            if method == "DELETE":
                return self._delete_collection(request, t)
        else:
            if method == "GET" and (t.legacy_watch or flag(q, "watch")):
                # Legacy /watch/.../NAME: a watch on one object.
                return await self._watch(request, t)
            if method == "GET":
                obj = self.store.get(t.resource, t.namespace, t.name)
                if tables.wants_table(request.headers.get("Accept", "")):
                    return _json(tables.table(t.resource, t.version, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject", "Metadata")))
                return _json(self._out(obj, t))
            if method == "PUT":
                body = await self._object_body(request)
                if (body.get("metadata") or {}).get("name") not in (None, t.name):
                    raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
                body.setdefault("metadata", {})["name"] = t.name
                updated = self.store.update(t.resource, body, t.namespace, t.subresource, strict=_strict(q))
                return _json(self._out(updated, t))
            if method == "PATCH":
                return await self._patch(request, t)
            if method == "DELETE":
                options = await self._object_body(request) if request.can_read_body else {}
                precondition = (options.get("preconditions") or {}).get("resourceVersion")
                return _json(self._out(self.store.delete(t.resource, t.namespace, t.name, precondition), t))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            if "yaml" in request.headers.get("Content-Type", ""):
                return yaml.safe_load(raw) or {}
            return json.loads(raw or b"{}")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from exc

    async def _object_body(self, request: web.Request) -> Obj:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", f"the body of the request must be a JSON object, not {type(body).__name__}")
        return body

    def _out(self, obj: Obj, t: Target) -> Obj:
        return _as_version(obj, t.resource, t.version)

    def _selected(self, request: web.Request) -> Callable[[Obj], bool]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        rv_param = q.get("resourceVersion", "")
        if q.get("resourceVersionMatch") == "Exact" and rv_param and _number(q, "resourceVersion") < self.store.compacted:
            raise ApiError(410, "Expired", f"too old resource version: {rv_param} ({self.store.compacted})")
        selected = self._selected(request)
        objects, rv = self.store.list(t.resource, t.namespace)
        start: tuple[str, str] | None = None
        if q.get("continue"):
            token_rv, start = _decode_continue(q["continue"])
            if token_rv < self.store.compacted:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                )
            rv = token_rv
        items = [
            o
            for o in objects
            if selected(o) and (start is None or (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start)
        ]
        limit = int(_number(q, "limit"))
        cont = ""
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            cont = _encode_continue(rv, (last.get("namespace", ""), last["name"]))
        if tables.wants_table(request.headers.get("Accept", "")):
            return _json(tables.table(t.resource, t.version, items, str(rv), q.get("includeObject", "Metadata"), cont))
        metadata: Obj = {"resourceVersion": str(rv)}
        if cont:
            metadata["continue"] = cont
        return _json(
            {
                "kind": f"{t.resource.kind}List",
                "apiVersion": t.resource.api_version(t.version),
                "metadata": metadata,
                "items": [self._out(o, t) for o in items],
            }
        )

    def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        selected = self._selected(request)
        objects, rv = self.store.list(t.resource, t.namespace)
        deleted = []
        for obj in objects:
            if selected(obj):
                try:
                    deleted.append(self.store.delete(t.resource, obj["metadata"].get("namespace"), obj["metadata"]["name"]))
                except ApiError:
                    continue  # deleted meanwhile
        return _json(
            {
                "kind": f"{t.resource.kind}List",
                "apiVersion": t.resource.api_version(t.version),
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": [self._out(o, t) for o in deleted],
            }
        )

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        body = await self._body(request)
        assert t.name is not None
        if content_type.startswith(patches.APPLY):
            return self._server_side_apply(t, body)
        media = content_type.split(";", 1)[0].strip()
        if media not in (patches.MERGE, patches.STRATEGIC, patches.JSON_PATCH):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patches.JSON_PATCH}, {patches.MERGE}, {patches.STRATEGIC}, {patches.APPLY}",
            )
        if media == patches.STRATEGIC and t.resource.custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patches.JSON_PATCH}, {patches.MERGE}, {patches.APPLY}",
            )
        patched = self.store.patch(
            t.resource,
            t.namespace,
            t.name,
            lambda obj: patches.apply_patch(media, obj, body),
            t.subresource,
            strict=_strict(request.query),
        )
        return _json(self._out(patched, t))

    def _server_side_apply(self, t: Target, body: Obj) -> web.Response:
        """Approximation: create if absent, else a merge patch (no field ownership)."""
        assert t.name is not None
        try:
            self.store.get(t.resource, t.namespace, t.name)
        except ApiError as err:
            if err.code != 404 or t.subresource:
                raise
            body.setdefault("metadata", {})["name"] = t.name
            return _json(self._out(self.store.create(t.resource, body, t.namespace), t), 201)
        patched = self.store.patch(
            t.resource, t.namespace, t.name, lambda obj: patches.merge_patch(obj, body), t.subresource
        )
        return _json(self._out(patched, t))

    # -- watch -----------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        selected = self._selected(request)
        if t.name is not None:
            by_name = parse_field_selector(f"metadata.name={t.name}")
            plain = selected
            selected = lambda obj: by_name(obj) and plain(obj)  # noqa: E731 - rebinds the name; a def would redefine it
        bookmarks = flag(q, "allowWatchBookmarks")
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        timeout = _number(q, "timeoutSeconds") if q.get("timeoutSeconds") else None
        deadline = None if timeout is None else time.monotonic() + timeout
        initial = q.get("resourceVersion", "") in ("", "0") or flag(q, "sendInitialEvents")
        start = None if initial else int(_number(q, "resourceVersion"))  # a 400 must come before the stream

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        watcher = Watcher(request)
        self.watchers.add(watcher)

        def encode(kind: str, obj: Obj) -> bytes:
            if as_table and kind not in ("BOOKMARK", "ERROR"):
                obj = tables.table(t.resource, t.version, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject", "Metadata"))
            elif kind != "ERROR":
                obj = self._out(obj, t)
            return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

        def bookmark(rv: int, initial_end: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return encode("BOOKMARK", {"kind": t.resource.kind, "apiVersion": t.resource.api_version(t.version), "metadata": meta})

        try:
            if start is None:
                objects, position = self.store.list(t.resource, t.namespace)
                for obj in objects:
                    if selected(obj):
                        await response.write(encode("ADDED", obj))
                if flag(q, "sendInitialEvents") and bookmarks:
                    await response.write(bookmark(position, initial_end=True))
            else:
                position = start
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                try:
                    events, position_now = self.store.events_after(position)
                except ApiError as err:
                    await response.write(encode("ERROR", err.status()))
                    break
                watcher.wake.clear()
                for event in events:
                    kind = self._event_type(event, t, selected)
                    if kind:
                        await response.write(encode(kind, event.object))
                position = max(position, position_now)
                now = time.monotonic()
                if bookmarks and now >= next_bookmark:
                    await response.write(bookmark(position))
                    next_bookmark = now + self.bookmark_interval
                if deadline is not None and now >= deadline:
                    if bookmarks:
                        await response.write(bookmark(position))
                    break
                if watcher.cut or self.closing:
                    break
                waits = [w for w in (deadline, next_bookmark if bookmarks else None) if w is not None]
                wait_for = max(0.0, min(waits) - now) if waits else None
                try:
                    await asyncio.wait_for(watcher.wake.wait(), wait_for)
                except TimeoutError:
                    pass
                if watcher.cut:
                    break
        except ConnectionResetError:
            return response  # the client went away
        finally:
            self.watchers.discard(watcher)
        if watcher.cut:
            # Cut without the chunked terminator, as a crashing server would.
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response

    def _event_type(self, event: Event, t: Target, selected: Callable[[Obj], bool]) -> str | None:
        """What this watch sees of an event: an object that starts or stops matching a selector
        arrives as ADDED or DELETED, as from the real server."""
        if event.resource.group != t.resource.group or event.resource.plural != t.resource.plural:
            return None
        if t.namespace is not None and event.object["metadata"].get("namespace") != t.namespace:
            return None
        now = selected(event.object)
        if event.previous is None:
            return event.type if now else None
        before = selected(event.previous)
        if now and before:
            return event.type
        if now:
            return "ADDED"
        return "DELETED" if before else None

