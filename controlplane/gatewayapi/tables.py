"""A Gateway's route tables (virtual hosts by hostname), kept up to date route by route.

A virtual host holds the Envoy routes of every route attached to its hostname on one route
table (an HTTP port, or one HTTPS listener), sorted by Gateway API precedence. Its content
depends only on which routes contributed what, so a route can be taken out and put in again
without looking at any other route: a one-route change rebuilds the virtual hosts of that
route's hostnames, reuses every other ``ir.VirtualHost`` object as it is (which is what lets the
xDS translator reuse their bytes), and keeps the set of backends in use as counts.

The full translation builds the tables the same way, from every attachment, so both paths
give the same virtual hosts.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any

from .. import ir
from . import hostnames
from .listeners import GatewayListener
from .rules import backends_of

Order = tuple[Any, ...]
IRRoutes = list[tuple[str, Order, ir.Route]]  # (name, precedence, route) of every match of a route


def table_of(lst: GatewayListener) -> str:
    """The route table a listener's routes go to, named as its virtual hosts' prefix: an HTTP
    port shares one; each HTTPS listener has its own (it is picked by SNI)."""
    return f"https-{lst.port}/{lst.name}" if lst.protocol == "HTTPS" else str(lst.port)


class Tables:
    """The route tables of one Gateway's programmed listeners."""

    def __init__(self, listeners: list[GatewayListener], previous: Tables | None = None) -> None:
        programmed = [lst for lst in listeners if lst.programmed]
        self._siblings = {lst.port: [o.hostname for o in programmed if o.port == lst.port] for lst in programmed}
        names = {table_of(lst) for lst in programmed}
        # table → host → route name → (precedence, route)
        self._entries: dict[str, dict[str, dict[str, tuple[Order, ir.Route]]]] = {t: {} for t in names}
        # table → host → (virtual host, the backends its routes use)
        self._vhosts: dict[str, dict[str, tuple[ir.VirtualHost, frozenset[str]]]] = {t: {} for t in names}
        self._hosts: dict[str, list[str]] = {t: [] for t in names}  # sorted
        self._tuples: dict[str, tuple[ir.VirtualHost, ...]] = {}
        self._full = True  # nothing built yet: every host is to be built (no need to note which)
        self._dirty: set[tuple[str, str]] = set()
        self._used: Counter[str] = Counter()  # backend → how many virtual hosts use it
        # A full rebuild hands on the previous objects of virtual hosts whose routes are the same.
        self._previous = previous._vhosts if previous is not None else {}

    def add(self, lst: GatewayListener, names: Iterable[str], routes: IRRoutes) -> None:
        """What one route attached to one listener adds: its routes on each hostname the listener owns."""
        for table, host in self._places(lst, names):
            host_routes = self._entries[table].setdefault(host, {})
            for name, order, route in routes:
                if name not in host_routes:
                    host_routes[name] = (order, route)

    def remove(self, lst: GatewayListener, names: Iterable[str], routes: IRRoutes) -> None:
        """Take out what :meth:`add` put in for the same arguments."""
        for table, host in self._places(lst, names):
            host_routes = self._entries[table].get(host, {})
            for name, _, _ in routes:
                host_routes.pop(name, None)

    def _places(self, lst: GatewayListener, names: Iterable[str]) -> Iterator[tuple[str, str]]:
        """(table, hostname) of each hostname the listener owns among ``names``, noted as changed."""
        if not lst.programmed:
            return
        table, siblings = table_of(lst), self._siblings[lst.port]
        for host in names:
            if hostnames.owned_by(host, lst.hostname, siblings):
                if not self._full:
                    self._dirty.add((table, host))
                yield table, host

    def hosts(self, table: str) -> list[str]:
        """The hostnames a table has virtual hosts for, sorted (not to be changed)."""
        self._refresh()
        return self._hosts[table]

    def ordered(self, table: str) -> tuple[ir.VirtualHost, ...]:
        """A table's virtual hosts in hostname order (C loops: a table may hold 10,000)."""
        self._refresh()
        found = self._tuples.get(table)
        if found is None:
            found = self._tuples[table] = tuple(
                map(itemgetter(0), map(self._vhosts[table].__getitem__, self._hosts[table]))
            )
        return found

    def backends(self) -> list[str]:
        """Every backend some virtual host uses, sorted."""
        self._refresh()
        return sorted(name for name, n in self._used.items() if n > 0)

    def _refresh(self) -> None:
        if self._full:
            self._build_all()
            return
        new: dict[str, list[str]] = {}
        replaced: dict[str, list[str]] = {}  # hosts whose virtual host is replaced in place
        dirty: Iterable[tuple[str, str]] = self._dirty
        used = self._used
        used_by = ir.by_backends_and_mirrors(backends_of)
        for table, host in dirty:
            entries, vhosts = self._entries[table], self._vhosts[table]
            found = entries.get(host)
            old = vhosts.get(host)
            if old is not None:
                for backend in old[1]:
                    used[backend] -= 1
            if not found:
                entries.pop(host, None)
                self._tuples.pop(table, None)
                if old is not None:
                    del vhosts[host]
                    self._hosts[table].remove(host)
                continue
            reuse = vhosts[host] = _vhost(table, host, found, old or self._previous.get(table, {}).get(host), used_by)
            for backend in reuse[1]:
                used[backend] = used.get(backend, 0) + 1
            if old is None:
                new.setdefault(table, []).append(host)
                self._tuples.pop(table, None)
            elif reuse is not old:
                replaced.setdefault(table, []).append(host)
        for table, hosts in replaced.items():
            self._replace_in_place(table, hosts)
        for table, hosts in new.items():
            if len(hosts) == 1:
                insort(self._hosts[table], hosts[0])
            else:  # a full build: sort once
                self._hosts[table] += hosts
                self._hosts[table].sort()
        self._dirty.clear()
        self._previous = {}

    def _build_all(self) -> None:
        """The first refresh: every host's virtual host, into tables that hold none yet (what
        the loop of :meth:`_refresh` does for each, with nothing to take out, and the counts and
        the sort done once over the lot)."""
        self._full = False
        used_by = ir.by_backends_and_mirrors(backends_of)
        backends: list[frozenset[str]] = []
        for table, entries in self._entries.items():
            vhosts, previous = self._vhosts[table], self._previous.get(table, {})
            for host in [host for host, found in entries.items() if not found]:
                del entries[host]
            for host, found in entries.items():
                made = vhosts[host] = _vhost(table, host, found, previous.get(host), used_by)
                backends.append(made[1])
            self._hosts[table] = sorted(vhosts)
            self._tuples.pop(table, None)
        self._used.update(chain.from_iterable(backends))  # a Counter: counted in C
        self._dirty.clear()
        self._previous = {}

    def _replace_in_place(self, table: str, hosts: list[str]) -> None:
        """The table's tuple with a few virtual hosts swapped (two C copies, no Python loop)."""
        found = self._tuples.get(table)
        if found is None:
            return
        ordered, vhosts, changed = self._hosts[table], self._vhosts[table], list(found)
        for host in hosts:
            changed[bisect_left(ordered, host)] = vhosts[host][0]
        self._tuples[table] = tuple(changed)


def _vhost(
    table: str,
    host: str,
    found: dict[str, tuple[Order, ir.Route]],
    reuse: tuple[ir.VirtualHost, frozenset[str]] | None,
    used_by: Callable[[ir.VirtualHost], frozenset[str]],
) -> tuple[ir.VirtualHost, frozenset[str]]:
    """A host's virtual host (and the backends it uses) from its routes by name: ``reuse`` when
    that one holds the very same routes in the same order."""
    ordered = found.values() if len(found) == 1 else sorted(found.values(), key=itemgetter(0))
    routes = tuple(map(itemgetter(1), ordered))
    if reuse is None or len(reuse[0].routes) != len(routes) or any(map(_differ, reuse[0].routes, routes)):
        vh = _make_vhost(f"{table}/{host}", (host,), routes)  # name, domains, routes
        return vh, used_by(vh)
    return reuse


_make_vhost = ir.positional(ir.VirtualHost)  # one per hostname: 10,000 at a cold start


def _differ(a: object, b: object) -> bool:
    return a is not b
