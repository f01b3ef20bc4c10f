"""What the control plane needs from a source of objects, whatever it is (a folder, a cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..gatewayapi.store import Store

OnChange = Callable[[Store], Awaitable[None] | None]


class Provider(Protocol):
    """A source of objects: an initial store, then a new store after every change."""

    async def start(self) -> Store:
        """Load everything once and return the first store (raise with a clear message if the
        source cannot be reached at all)."""
        ...

    async def watch(self, on_change: OnChange) -> None:
        """Run until cancelled, calling ``on_change`` with a new store after each batch of changes."""
        ...

    def describe(self) -> str:
        """Where the objects come from, for logs."""
        ...


async def deliver(on_change: OnChange, store: Store) -> None:
    """Call ``on_change``, awaiting it when it is a coroutine function."""
    result = on_change(store)
    if asyncio.iscoroutine(result):
        await result
