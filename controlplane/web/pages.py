"""HTML for the page, rendered on the server from :mod:`.model` rows (no template engine: every
value goes through :func:`html.escape`). Each page is a shell around a ``#live`` fragment that
web.js fetches again every few seconds and swaps in place."""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import TypeVar
from urllib.parse import urlencode

from ..shadow.entries import Leg
from ..shadow.hub import Diff
from .history import Point
from .model import EnvoyRow, GatewayRow, Latencies, MirrorRow, Overview, RuleRow, shown_headers

T = TypeVar("T")
GATEWAYS_PER_PAGE = 20
ENVOYS_PER_PAGE = 25
RULES_PER_PAGE = 50
ROUTES_SHOWN = 8  # attached routes listed per Gateway row; the rest as "+N more"
DIFFERING = ("status_differs", "body_differs", "headers_differ")
SERIES = (
    ("status_differs", "status"),
    ("body_differs", "body"),
    ("headers_differ", "headers"),
    ("mirror_failed", "failed"),
    ("unpaired", "unpaired"),
)


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def rule_url(row: RuleRow) -> str:
    return "/rule?" + urlencode({"gateway": row.gateway, "route": row.route, "rule": row.rule})


def document(title: str, live_url: str, generation: str, fragment: str, *, q: str | None, every_ms: int) -> str:
    search = (
        '<form class="filter" method="get">'
        f'<input name="q" value="{esc(q)}" placeholder="filter: Gateway, route, Envoy, backend, path…" '
        'autocomplete="off" spellcheck="false" aria-label="filter"></form>'
        if q is not None
        else ""
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · mirrorplane</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/web.css"><script src="/static/web.js" defer></script></head>'
        f'<body data-live="{esc(live_url)}" data-generation="{esc(generation)}" data-every="{every_ms}">'
        '<header><a class="home" href="/">mirrorplane</a>'
        f'<span class="where">{esc(title)}</span>'
        f'<span class="live" id="state">live · updated <time id="updated">{clock(time.time())}</time> UTC</span>'
        "</header>"
        f'<main>{search}<div id="live">{fragment}</div></main></body></html>\n'
    )


def matching(rows: Sequence[T], q: str) -> list[T]:
    """Rows whose text has every word of ``q``."""
    words = q.lower().split()
    return [r for r in rows if all(w in r.text for w in words)] if words else list(rows)  # type: ignore[attr-defined]


def _pager(total: int, page: int, per: int, param: str, query: dict[str, str]) -> tuple[int, str]:
    """(first index, the pager's HTML); ``page`` is 1-based and clamped."""
    pages = max(1, (total + per - 1) // per)
    page = min(max(1, page), pages)
    if pages == 1:
        return 0, ""
    links = []
    for p, label in ((page - 1, "‹ previous"), (page + 1, "next ›")):
        if 1 <= p <= pages:
            links.append(f'<a href="?{esc(urlencode({**query, param: str(p)}))}">{label}</a>')
    return (page - 1) * per, f'<p class="pager">page {page} of {pages} · {" · ".join(links)}</p>'


def _count(total: int, everything: int) -> str:
    return f"{total}" if total == everything else f"{total} of {everything} match"


# -- overview ---------------------------------------------------------------------------------


def _gateway(row: GatewayRow, words: list[str]) -> str:
    listeners = "".join(
        f"<li><b>{esc(lst.name)}</b> {esc(lst.protocol)} :{esc(lst.port or '?')}"
        + (f' <span class="muted">{esc(lst.hostname)}</span>' if lst.hostname else "")
        + f" · {lst.attached} route{'s' if lst.attached != 1 else ''}"
        + (f' <span class="bad">{esc(lst.problem)}</span>' if lst.problem else ' <span class="ok">programmed</span>')
        + "</li>"
        for lst in row.listeners
    )
    found = [r for r in row.routes if all(w in r.lower() for w in words)] if words else []
    shown = (found or list(row.routes))[:ROUTES_SHOWN]
    routes = "".join(f"<li>{esc(r)}</li>" for r in shown)
    if len(row.routes) > len(shown):
        routes += f'<li class="muted">+{len(row.routes) - len(shown)} more (filter to find them)</li>'
    state = f'<span class="bad">{esc(row.problem)}</span>' if row.problem else '<span class="ok">programmed</span>'
    return (
        f'<tr data-gateway="{esc(row.name)}"><td><b>{esc(row.name)}</b><br>{state}</td>'
        f'<td><ul class="plain">{listeners}</ul></td><td>'
        f'<ul class="plain">{routes or "<li class=muted>none</li>"}</ul></td>'
        f'<td class="num">{row.envoys}</td></tr>'
    )


_STATE_CLASS = {"ACKed": "ok", "NACKed": "bad", "sent": "warn", "waiting": "warn"}


def _envoy(row: EnvoyRow) -> str:
    cls = _STATE_CLASS.get(row.state, "muted")
    types = "".join(
        f"<li><b>{esc(t.type)}</b> sent {esc(t.sent or '-')} · acked {esc(t.acked or '-')} "
        f'<span class="{_STATE_CLASS.get(t.state, "muted")}">{esc(t.state)}</span>'
        + (f'<div class="error">{esc(t.error)}</div>' if t.error else "")
        + "</li>"
        for t in row.types
    )
    return (
        f'<tr data-node="{esc(row.node_id)}"><td><b>{esc(row.node_id)}</b>'
        f'<br><span class="muted">{esc(row.user_agent)}</span></td>'
        f"<td>{esc(row.gateway)}</td><td>{esc(row.address)}<br>"
        f'<span class="muted">since {clock(row.connected_at)}</span></td>'
        f'<td><span class="state {cls}">{esc(row.state)}</span></td><td><ul class="plain types">{types}</ul></td></tr>'
    )


def _share(results: dict[str, int]) -> str:
    pairs = sum(results.values())
    if not pairs:
        return '<span class="muted">no pairs yet</span>'
    differing = sum(results.get(r, 0) for r in DIFFERING)
    cls = "bad" if differing or results.get("mirror_failed") else "ok"
    return f'<span class="{cls}">{100 * (pairs - results.get("same", 0)) / pairs:.0f}%</span> not same'


def _latency_cell(lat: tuple[float, float] | None) -> str:
    if not lat or not lat[1]:
        return '<span class="muted">-</span>'
    return f"{lat[0] * 1000:.1f} / {ms(lat[1])}" if lat[1] < 1 else f"{ms(lat[0])} / {ms(lat[1])}"


def _mirror_cells(row: RuleRow, m: MirrorRow, latencies: Latencies) -> str:
    results = dict(m.stats.results) if m.stats else {}
    lat = latencies.get((row.gateway, row.route, row.rule, m.backend), m.stats) if m.stats else None
    differing = sum(results.get(r, 0) for r in DIFFERING)
    policy = esc(m.policy) if m.policy else '<span class="muted">-</span>'
    return (
        f'<td class="mirror">{esc(m.backend)}</td><td class="num">{esc(m.fraction or "-")}</td><td>{policy}</td>'
        f'<td class="num">{sum(results.values())}</td><td class="num">{results.get("same", 0)}</td>'
        f'<td class="num{" bad" if differing else ""}">{differing}</td>'
        f'<td class="num{" bad" if results.get("mirror_failed") else ""}">{results.get("mirror_failed", 0)}</td>'
        f'<td class="num">{results.get("unpaired", 0)}</td>'
        f'<td class="num">{_latency_cell(lat[0] if lat else None)}</td>'
        f'<td class="num">{_latency_cell(lat[1] if lat else None)}</td>'
    )


def _rule(row: RuleRow, latencies: Latencies) -> str:
    mirrors = list(row.mirrors.values())
    span = max(1, len(mirrors))
    where = "" if row.in_config else ' <span class="warn">not in the served config</span>'
    head = (
        f'<td rowspan="{span}">{esc(row.gateway)}</td>'
        f'<td rowspan="{span}">'
        f'<a class="rule" href="{esc(rule_url(row))}">{esc(row.route)} · rule {esc(row.rule)}</a>{where}'
        f'<br><span class="muted">{esc(", ".join(row.matches[:3]))}{" …" if len(row.matches) > 3 else ""}</span></td>'
        f'<td rowspan="{span}">{_share(row.results())}</td>'
    )
    out = []
    for i, m in enumerate(mirrors):
        out.append(
            f'<tr data-rule="{esc(row.route)} {esc(row.rule)}">{head if i == 0 else ""}'
            f"{_mirror_cells(row, m, latencies)}</tr>"
        )
    return "".join(out)


def overview(ov: Overview, q: str, pages: dict[str, int], latencies: Latencies, sort: str) -> str:
    query = {k: v for k, v in {"q": q, "sort": sort}.items() if v}
    query.update({k: str(v) for k, v in pages.items() if v > 1})
    gateways, envoys, rules = matching(ov.gateways, q), matching(ov.envoys, q), matching(ov.rules, q)
    if sort == "differing":
        rules.sort(key=lambda r: -r.differing_share())
    g0, g_pager = _pager(len(gateways), pages.get("gpage", 1), GATEWAYS_PER_PAGE, "gpage", query)
    e0, e_pager = _pager(len(envoys), pages.get("epage", 1), ENVOYS_PER_PAGE, "epage", query)
    r0, r_pager = _pager(len(rules), pages.get("rpage", 1), RULES_PER_PAGE, "rpage", query)
    other_sort = "name" if sort == "differing" else "differing"
    sort_query = {**{k: v for k, v in query.items() if k != "rpage"}, "sort": other_sort}
    sort_link = f'<a href="?{esc(urlencode(sort_query))}">sort by {other_sort}</a>'
    return (
        f'<section id="gateways"><h2>Gateways <span class="count">{_count(len(gateways), len(ov.gateways))}</span></h2>'
        "<table><thead><tr><th>Gateway</th><th>Listeners</th>"
        "<th>Attached routes</th><th>Envoys</th></tr></thead><tbody>"
        + "".join(_gateway(r, q.lower().split()) for r in gateways[g0 : g0 + GATEWAYS_PER_PAGE])
        + f"</tbody></table>{g_pager}</section>"
        f'<section id="envoys"><h2>Envoys <span class="count">{_count(len(envoys), len(ov.envoys))}</span></h2>'
        "<table><thead><tr><th>Node</th><th>Gateway</th><th>Address</th>"
        "<th>State</th><th>Sent / ACKed / NACKed</th></tr></thead><tbody>"
        + (
            "".join(_envoy(r) for r in envoys[e0 : e0 + ENVOYS_PER_PAGE])
            or f'<tr><td colspan="5" class="muted">{"no Envoy " + ("matches" if ov.envoys else "connected")}</td></tr>'
        )
        + f"</tbody></table>{e_pager}</section>"
        '<section id="rules">'
        f'<h2>Mirrored route rules <span class="count">{_count(len(rules), len(ov.rules))}</span> {sort_link}</h2>'
        "<table><thead><tr><th>Gateway</th><th>Route rule</th>"
        "<th>Mirror answers</th><th>Mirror backend</th><th>Fraction</th>"
        "<th>MirrorPolicy</th><th>Pairs</th><th>Same</th><th>Differing</th><th>Mirror failed</th><th>Unpaired</th>"
        "<th>Primary p50/p99</th><th>Mirror p50/p99</th></tr></thead><tbody>"
        + (
            "".join(_rule(r, latencies) for r in rules[r0 : r0 + RULES_PER_PAGE])
            or '<tr><td colspan="13" class="muted">'
            + ("no mirrored route rule matches" if ov.rules else "no route rule has a mirror")
            + "</td></tr>"
        )
        + f"</tbody></table>{r_pager}</section>"
    )


# -- a rule's page ----------------------------------------------------------------------------


def _x(at: float, t0: float, t1: float, width: float) -> float:
    return (at - t0) / (t1 - t0) * width if t1 > t0 else width


def share_chart(points: list[Point], interval: float, now: float) -> str:
    """Bars: per interval, the share of pairs that were not the same, stacked by result."""
    w, h, left, bottom = 720, 150, 40, 20
    if not points:
        return '<p class="muted">No pairs compared yet: the chart fills in as mirrored requests are compared.</p>'
    t0, t1 = min(points[0].at - interval, now - 10 * interval), now
    bar = max(1.0, w * interval / (t1 - t0) - 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {w + left + 10} {h + bottom + 10}" role="img" '
        'aria-label="share of differing pairs over time">',
        *(
            f'<line class="grid" x1="{left}" x2="{left + w}" y1="{5 + h * (1 - f)}" y2="{5 + h * (1 - f)}"/>'
            f'<text class="axis" x="{left - 4}" y="{9 + h * (1 - f)}" text-anchor="end">{int(f * 100)}%</text>'
            for f in (0, 0.5, 1)
        ),
    ]
    for p in points:
        x = left + _x(p.at, t0, t1, w) - bar
        y = 5.0 + h
        tip = f"{clock(p.at)} UTC: {p.differing} of {p.pairs} pairs not same"
        tip += "".join(f", {label} {p.results[r]}" for r, label in SERIES if p.results.get(r))
        for result, label in SERIES:
            n = p.results.get(result, 0)
            if n:
                height = h * n / p.pairs
                y -= height
                parts.append(
                    f'<rect class="r-{label}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}">'
                    f"<title>{esc(tip)}</title></rect>"
                )
        if not p.differing:
            parts.append(
                f'<rect class="r-same" x="{x:.1f}" y="{5 + h - 2}" width="{bar:.1f}" height="2">'
                f"<title>{esc(tip)}</title></rect>"
            )
    parts.append(f'<text class="axis" x="{left}" y="{h + bottom + 8}">{clock(t0)}</text>')
    parts.append(
        f'<text class="axis" x="{left + w}" y="{h + bottom + 8}" text-anchor="end">{clock(t1)} UTC</text></svg>'
    )
    legend = "".join(f'<span class="key"><i class="sw r-{label}"></i>{label}</span>' for _, label in SERIES)
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def latency_chart(points: list[Point], interval: float, now: float) -> str:
    """Lines: per interval, p50 and p99 of the primary and of the mirror leg (ms)."""
    w, h, left, bottom = 720, 150, 60, 20
    points = [p for p in points if p.primary[1] or p.mirror[1]]
    if not points:
        return ""
    t0, t1 = min(points[0].at - interval, now - 10 * interval), now
    top = max(max(p.primary[1], p.mirror[1]) for p in points) * 1.1 or 1.0
    lines = (("primary", 0, "p50"), ("primary", 1, "p99"), ("mirror", 0, "p50"), ("mirror", 1, "p99"))
    parts = [
        f'<svg class="chart" viewBox="0 0 {w + left + 10} {h + bottom + 10}" role="img" '
        'aria-label="latency of both legs over time">',
        *(
            f'<line class="grid" x1="{left}" x2="{left + w}" y1="{5 + h * (1 - f)}" y2="{5 + h * (1 - f)}"/>'
            f'<text class="axis" x="{left - 4}" y="{9 + h * (1 - f)}" text-anchor="end">{ms(top * f)}</text>'
            for f in (0, 0.5, 1)
        ),
    ]
    for leg, i, label in lines:
        xy = " ".join(f"{left + _x(p.at, t0, t1, w):.1f},{5 + h * (1 - getattr(p, leg)[i] / top):.1f}" for p in points)
        parts.append(f'<polyline class="l-{leg} l-{label}" points="{xy}"><title>{leg} {label}</title></polyline>')
        if len(points) == 1:  # a line needs two points: mark the one
            x, y = xy.split(",")
            parts.append(f'<circle class="l-{leg}" cx="{x}" cy="{y}" r="3"><title>{leg} {label}</title></circle>')
    parts.append(f'<text class="axis" x="{left}" y="{h + bottom + 8}">{clock(t0)}</text>')
    parts.append(
        f'<text class="axis" x="{left + w}" y="{h + bottom + 8}" text-anchor="end">{clock(t1)} UTC</text></svg>'
    )
    legend = "".join(
        f'<span class="key"><i class="ln l-{leg} l-{label}"></i>{leg} {label}</span>' for leg, _, label in lines
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def _leg_value(leg: Leg | None, field: str) -> str:
    if leg is None:
        return '<span class="muted">no entry</span>'
    value = {
        "status": leg.status or "none",
        "grpc-status": leg.grpc_status or "-",
        "size": f"{leg.size} B" if leg.size >= 0 else "unknown",
        "digest": leg.digest or "-",
        "body": leg.excerpt or "-",
        "latency": ms(leg.latency),
        "failure": leg.failure or "-",
        "backend": leg.cluster,
    }[field]
    return esc(value)


def pair(d: Diff) -> str:
    either = d.primary or d.mirror_leg
    method, path = (either.method, either.path) if either else ("", "")
    p, m = d.primary, d.mirror_leg
    status = f'{esc(p.status if p else "-")} → <span class="bad">{esc(m.status if m and m.status else "none")}</span>'
    rows = [
        ("request id", esc(d.request_id), esc(d.request_id)),
        ("method, path", esc(f"{method} {path}"), esc(f"{method} {path}")),
    ]
    rows += [
        (f, _leg_value(p, f), _leg_value(m, f))
        for f in ("backend", "status", "grpc-status", "size", "digest", "latency", "failure")
    ]
    if (p and p.excerpt) or (m and m.excerpt):  # body comparison: the start of each body, as compared
        rows.append(("body", f"<pre>{_leg_value(p, 'body')}</pre>", f"<pre>{_leg_value(m, 'body')}</pre>"))
    rows += [
        (f"header {name}", esc(a) or '<span class="muted">-</span>', esc(b) or '<span class="muted">-</span>')
        for name, a, b in shown_headers(p.headers if p else {}, m.headers if m else {})
    ]
    table = "".join(
        f"<tr{' class=differs' if a != b else ''}><th>{esc(name)}</th>"
        f'<td class="leg-primary">{a}</td><td class="leg-mirror">{b}</td></tr>'
        for name, a, b in rows
    )
    key = f"{d.mirror}|{d.request_id}|{d.at}"
    return (
        f'<details class="pair" data-key="{esc(key)}"><summary>'
        f'<time>{clock(d.at)}</time> <span class="result r-{esc(d.result)}">{esc(d.result)}</span> '
        f'<code>{esc(method)} {esc(path)}</code> {status} <span class="muted">{esc(d.detail)}</span></summary>'
        '<table class="legs"><thead><tr><th></th><th>primary</th>'
        f"<th>mirror</th></tr></thead><tbody>{table}</tbody></table></details>"
    )


def rule(
    row: RuleRow, series: dict[tuple[str, str, str, str], list[Point]], latencies: Latencies, interval: float
) -> str:
    now = time.time()
    mirrors = []
    for m in row.mirrors.values():
        key = (row.gateway, row.route, row.rule, m.backend)
        comparison = m.mirror.comparison if m.mirror else None
        settings = (
            f"compared: {comparison.sample_percent}% of mirrored requests"
            f" · headers {esc(', '.join(comparison.headers) or '-')}"
            + (
                f" · bodies by digest up to {comparison.body_limit_bytes} bytes"
                + (f" ignoring {esc(', '.join(comparison.ignore_json_paths))}" if comparison.ignore_json_paths else "")
                if comparison.body
                else ""
            )
            if comparison
            else "not in the served config"
        )
        mirrors.append(
            f'<section class="mirror-detail"><h3>{esc(m.backend)}</h3>'
            f'<p class="muted">{settings}'
            + (f" · Host {esc(m.mirror.hostname)}" if m.mirror and m.mirror.hostname else "")
            + "</p>"
            "<table><thead><tr><th>Mirror backend</th><th>Fraction</th>"
            "<th>MirrorPolicy</th><th>Pairs</th><th>Same</th><th>Differing</th>"
            "<th>Mirror failed</th><th>Unpaired</th><th>Primary p50/p99</th><th>Mirror p50/p99</th></tr></thead>"
            f"<tbody><tr>{_mirror_cells(row, m, latencies)}</tr></tbody></table>"
            f"<h4>Share of pairs not the same, per {interval:g} s</h4>{share_chart(series.get(key, []), interval, now)}"
            f"<h4>Latency of both legs, per {interval:g} s</h4>"
            f"{latency_chart(series.get(key, []), interval, now)}</section>"
        )
    recent = row.recent()
    pairs = "".join(pair(d) for d in recent) or '<p class="muted">No differing pair yet.</p>'
    where = "" if row.in_config else ' <span class="warn">not in the served config</span>'
    return (
        f'<section id="rule"><h2>{esc(row.route)} · rule {esc(row.rule)}{where}</h2>'
        f"<p>Gateway <b>{esc(row.gateway)}</b> · matches {esc('; '.join(row.matches) or '-')}"
        f" · hostnames {esc(', '.join(row.hostnames) or '-')}"
        f" · backends {esc(', '.join(row.backends) or '-')} · {_share(row.results())}</p></section>"
        + "".join(mirrors)
        + f'<section id="pairs"><h2>Most recent differing pairs <span class="count">{len(recent)}</span></h2>'
        '<p class="muted">The last 10 per mirror. Open one to see both legs side by side.</p>'
        f"{pairs}</section>"
    )
