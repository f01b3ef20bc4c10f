"""Keeps a provider running: a watch that fails or ends is restarted, with backoff.

A provider that stops silently freezes the config at its last state while everything still
looks healthy. Here every stop is logged with its cause, the owner is told the provider is down
(health then says not ready), and the provider is started again — ``start`` then ``watch``, so
that what changed while it was down is read again — until it stays up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .base import OnChange, Provider, deliver

log = logging.getLogger("mirrorplane.provider")


class Supervisor:
    """Runs ``provider.watch`` forever; ``on_up(False)`` when it stops, ``on_up(True)`` once it
    has been started again."""

    def __init__(
        self,
        provider: Provider,
        on_change: OnChange,
        on_up: Callable[[bool], Awaitable[None]],
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
        stable_after: float = 60.0,
    ) -> None:
        self.provider = provider
        self.on_change = on_change
        self.on_up = on_up
        self.backoff = backoff
        self.stable_after = stable_after  # a watch that ran this long resets the backoff
        self.restarts = 0

    async def run(self) -> None:
        """Watch (the provider was started by the caller), and restart it whenever it stops."""
        delay = self.backoff[0]
        while True:
            began = time.monotonic()
            try:
                if self.restarts:
                    await deliver(self.on_change, await self.provider.start())
                    await self.on_up(True)
                await self.provider.watch(self.on_change)
                raise RuntimeError("the watch ended")
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged with its traceback, then restarted
                if time.monotonic() - began > self.stable_after:
                    delay = self.backoff[0]
                log.exception(
                    "provider.stopped source=%s restart_in=%.1fs serving=last_good_config ready=false",
                    self.provider.describe(),
                    delay,
                )
            await self.on_up(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])
            self.restarts += 1
            log.warning("provider.restarting source=%s restarts=%d", self.provider.describe(), self.restarts)
