"""FakeApiServer: the fake kube-apiserver on a free 127.0.0.1 port, with test controls.

It runs its own event loop in a thread, so it answers whatever the test does
meanwhile: blocking subprocess calls to kubectl, a provider on the test's
loop, or a benchmark saturating that loop. Tests reach the state directly
(create/get/list/patch/delete without HTTP) and through the request log.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.ports import free_port

from . import admission, patches
from .app import ApiApp, RecordedRequest
from .resources import Resource
from .selectors import parse_field_selector, parse_label_selector
from .store import ApiError, Obj, Store


class FakeApiServer:
    """A kube-apiserver stand-in. Use as ``with FakeApiServer() as api:`` or start()/stop().

    ``bookmark_interval``: seconds between BOOKMARK events on watches that allow them.
    ``validate``: Gateway API objects are defaulted, pruned and validated against their CRDs on
    every write (status too), as a real server does; False stores them as sent (about 8x
    faster for bulk fills of already valid objects).
    """

    def __init__(self, port: int | None = None, bookmark_interval: float = 1.0, validate: bool = True) -> None:
        self.store = Store(admit=functools.partial(admission.admit, validate=validate))
        self.port = port or free_port()
        self.bookmark_interval = bookmark_interval
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: ApiApp | None = None
        self._runner: web.AppRunner | None = None
        self.failures: dict[str, int] = {}  # request path → how many more requests answer 500

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        """Serve on ``self.port``; returns once it accepts connections."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fakeapi-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"fake API server could not listen on {self.url}: {failure[0]}") from failure[0]
        return self

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._app = ApiApp(self.store, self.bookmark_interval, self._record, self.failures)
        app = self._app

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed after a write started
                loop.call_soon_threadsafe(app.wake_all)

        self._notify = notify
        self.store.add_listener(notify)
        self._runner = web.AppRunner(self._app.build(), handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def _shutdown(self) -> None:
        assert self._app is not None and self._runner is not None
        self._app.closing = True
        self._app.cut_watches()
        await self._runner.cleanup()

    def stop(self) -> None:
        """Stop listening and cut every open watch; the state stays for start()."""
        if self._thread is None or self._loop is None:
            return
        self.store.remove_listener(self._notify)
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._thread = self._loop = self._app = self._runner = None

    def fail(self, path: str, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` (any method, any query) answer 500."""
        self.failures[path] = times

    def restart(self) -> None:
        """An API server restart: open watches are cut, then the same port serves the same state."""
        self.stop()
        self.start()

    def cut_watches(self) -> None:
        """Drop every open watch connection without stopping the server."""
        if self._loop is not None and self._app is not None:
            self._loop.call_soon_threadsafe(self._app.cut_watches)

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now (wait on it before changing things a watch must see)."""
        return len(self._app.watchers) if self._app is not None else 0

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- kubeconfig --------------------------------------------------------

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> str:
        """A kubeconfig for kubectl and kubernetes-asyncio (plain HTTP, a dummy token)."""
        from .kubeconfig import write_kubeconfig

        return write_kubeconfig(path, self.url, namespace=namespace)

    # -- state -------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion (etcd's revision)."""
        return self.store.resource_version

    def compact(self, rv: int | None = None) -> int:
        """Forget history up to ``rv`` (default: now): a watch or Exact list from before gets 410 Gone."""
        return self.store.compact(rv)

    def resource(self, name: str) -> Resource:
        """A served resource by kind, plural, short name or plural.group (``HTTPRoute``, ``svc``)."""
        return self.store.registry.lookup(name)

    def create(self, obj: Obj) -> Obj:
        """Create as a POST would (status dropped where there is a status subresource)."""
        return copy.deepcopy(self.store.create(self.store.registry.for_object(obj), obj))

    def apply(self, obj: Obj) -> Obj:
        """Create, or replace the spec of the existing object (ignoring its resourceVersion)."""
        resource = self.store.registry.for_object(obj)
        meta = obj.get("metadata", {})
        try:
            self.store.get(resource, self._ns(resource, meta.get("namespace")), meta["name"])
        except ApiError:
            return self.create(obj)
        body = copy.deepcopy(obj)
        body["metadata"].pop("resourceVersion", None)
        return copy.deepcopy(self.store.update(resource, body))

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        resource = self.resource(kind)
        return copy.deepcopy(self.store.get(resource, self._ns(resource, namespace), name))

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str = "", field_selector: str = ""
    ) -> list[Obj]:
        resource = self.resource(kind)
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        objects, _ = self.store.list(resource, namespace if resource.namespaced else None)
        return [copy.deepcopy(o) for o in objects if labels(o) and fields(o)]

    def update(self, obj: Obj, status: bool = False) -> Obj:
        """PUT (``status=True``: to the status subresource); a stale resourceVersion raises 409."""
        resource = self.store.registry.for_object(obj)
        return copy.deepcopy(self.store.update(resource, obj, subresource="status" if status else None))

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        content_type: str = patches.MERGE,
        status: bool = False,
    ) -> Obj:
        resource = self.resource(kind)
        return copy.deepcopy(
            self.store.patch(
                resource,
                self._ns(resource, namespace),
                name,
                lambda obj: patches.apply_patch(content_type, obj, patch),
                "status" if status else None,
            )
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        resource = self.resource(kind)
        return copy.deepcopy(self.store.delete(resource, self._ns(resource, namespace), name))

    @staticmethod
    def _ns(resource: Resource, namespace: str | None) -> str | None:
        return (namespace or "default") if resource.namespaced else None

    # -- request log -------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)

    def requests(
        self, method: str | None = None, path: str | None = None, where: Callable[[RecordedRequest], bool] | None = None
    ) -> builtins.list[RecordedRequest]:  # plain `list` here is the method above
        """Requests answered so far; ``path`` matches a substring (``"/httproutes/"``, ``"/status"``)."""
        with self._requests_lock:
            found = list(self._requests)
        return [
            r
            for r in found
            if (method is None or r.method == method)
            and (path is None or path in r.path)
            and (where is None or where(r))
        ]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()
