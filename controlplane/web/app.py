"""The page's HTTP handlers, added to the HTTP port's aiohttp application beside /metrics.

Cost control: the page is rendered from memory, and the overview's rows are rebuilt at most once
per ``rebuild_every`` seconds and only when something changed (a translation, an xDS event, a
log entry), however many browsers poll; a poll that finds nothing new gets 204 without any
rendering; each answer renders one page of rows (:mod:`.pages`), and browsers asking for the
same view of the same build share one rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from ..xds.tracking import Event
from . import pages
from .access import refusal
from .history import History
from .model import Latencies, Overview, Sources, build

log = logging.getLogger("mirrorplane.web")

POLL_MS = 2000
"""How often an open page asks for news."""
STATIC = {"web.js": "text/javascript", "web.css": "text/css"}
SECURITY_HEADERS = {
    # Only our own script and style; no inline script, no framing, nothing sent elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class WebPage:
    """The overview (``/``) and a rule's page (``/rule?gateway=&route=&rule=``)."""

    def __init__(
        self,
        sources: Sources,
        *,
        translations: Callable[[], int],
        open_to_all: bool = False,
        rebuild_every: float = 1.0,
        history: History | None = None,
    ) -> None:
        self.sources = sources
        self.translations = translations
        self.open_to_all = open_to_all
        self.rebuild_every = rebuild_every
        self.history = history or History(sources.comparisons)
        self.latencies = Latencies()
        self.renders = 0  # how many times a view was rendered rather than reused
        self._xds_events = 0
        self._overview: Overview | None = None
        self._built_for = ""
        self._built_at = 0.0
        self._rendered: dict[str, str] = {}  # fragment by request, for the current build: browsers share it
        self._static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC}
        self._remove_observer: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._overview_page)
        app.router.add_get("/rule", self._rule_page)
        app.router.add_get("/static/{name}", self._static_file)

    async def start(self) -> None:
        self._remove_observer = self.sources.registry.add_observer(self._on_xds_event)
        self._task = asyncio.create_task(self.history.run(), name="web-history")

    async def stop(self) -> None:
        if self._remove_observer is not None:
            self._remove_observer()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_xds_event(self, _: Event) -> None:
        self._xds_events += 1

    def generation(self) -> str:
        """Changes whenever anything the page shows may have changed."""
        c = self.sources.comparisons
        return f"{self.translations()}.{self._xds_events}.{sum(c.entries.values())}.{self.history.changes}"

    def overview(self) -> tuple[Overview, str]:
        """The rows, rebuilt when the generation moved and the last build is old enough."""
        gen = self.generation()
        now = time.monotonic()
        if self._overview is None or (gen != self._built_for and now - self._built_at >= self.rebuild_every):
            self._overview, self._built_for, self._built_at = build(self.sources), gen, now
            self._rendered.clear()
        return self._overview, self._built_for

    # -- handlers -------------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        reason = refusal(request.remote, request.headers.get("Host"), open_to_all=self.open_to_all)
        if reason is None:
            return None
        log.warning(
            "web.refused peer=%s host=%r path=%s reason=%r",
            request.remote,
            request.headers.get("Host"),
            request.path,
            reason,
        )
        return web.Response(status=403, text=f"mirrorplane: {reason}\n", headers=SECURITY_HEADERS)

    def _answer(
        self, request: web.Request, title: str, generation: str, render: Callable[[], str], *, q: str | None
    ) -> web.Response:
        fragment = request.query.get("fragment") == "1"
        if fragment and request.query.get("since") == generation:
            return web.Response(status=204, headers={**SECURITY_HEADERS, "X-Generation": generation})
        key = (
            request.path
            + "?"
            + "&".join(f"{k}={v}" for k, v in sorted(request.query.items()) if k not in ("fragment", "since"))
        )
        body = self._rendered.get(key)
        if body is None:
            self.renders += 1
            body = render()
            if len(self._rendered) < 256:
                self._rendered[key] = body
        if not fragment:
            live = request.path_qs
            body = pages.document(title, live, generation, body, q=q, every_ms=POLL_MS)
        return web.Response(
            text=body,
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, "X-Generation": generation},
        )

    async def _overview_page(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        ov, generation = self.overview()
        q = request.query.get("q", "")[:200]
        sort = "differing" if request.query.get("sort") == "differing" else ""
        numbers = {k: _int(request.query.get(k)) for k in ("gpage", "epage", "rpage")}
        return self._answer(
            request, "overview", generation, lambda: pages.overview(ov, q, numbers, self.latencies, sort), q=q
        )

    async def _rule_page(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        ov, generation = self.overview()
        key = (request.query.get("gateway", ""), request.query.get("route", ""), request.query.get("rule", ""))
        row = ov.by_rule.get(key)
        if row is None:
            text = f"mirrorplane: no mirrored route rule {key[1]!r} rule {key[2]!r} on Gateway {key[0]!r}\n"
            return web.Response(status=404, text=text, headers=SECURITY_HEADERS)
        title = f"{row.route} · rule {row.rule}"

        def render() -> str:
            series = self.history.series(row.keys())
            return pages.rule(row, series, self.latencies, self.history.interval)

        return self._answer(request, title, generation, render, q=None)

    async def _static_file(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC[name], headers=SECURITY_HEADERS)


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() and len(text) < 7 else 1
