"""The echo "pods": one ``mirrorplane echo`` process per Deployment replica.

Each process binds its own loopback address (its pod IP) on echo-basic's ports, so Services keep
their real targetPorts and EndpointSlices look exactly as a cluster's would. Stdout is kept with
the time each line arrived: the mirror checks read it the way upstream reads pod logs
(``SinceTime``), matching echo-basic's "Echoing back request made to ..." line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from controlplane.localenvoy import _pdeathsig_preexec

from .fixture import H2C_PORT, HTTP_PORT, SPARE_PORT, PodSpec

log = logging.getLogger("mirrorplane.conformance")


@dataclass
class Pod:
    spec: PodSpec
    service: str
    proc: asyncio.subprocess.Process | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def logs_since(self, since: float) -> list[str]:
        return [line for t, line in self.lines if t >= since]


class Pods:
    """Starts, reads and stops the echo pods of one run (shared by every test)."""

    def __init__(self) -> None:
        self.pods: list[Pod] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, specs: list[PodSpec], services: dict[tuple[str, str], str], timeout: float = 30) -> None:
        """Start every pod; ``services`` names the Service that selects each (namespace, deployment)."""
        for spec in specs:
            pod = Pod(spec, services.get((spec.namespace, spec.deployment), ""))
            env = dict(os.environ, POD_NAME=spec.name, NAMESPACE=spec.namespace, SERVICE_NAME=pod.service)
            ports = (
                ["--port", str(SPARE_PORT), "--grpc-port", str(HTTP_PORT)]
                if spec.grpc
                else ["--port", str(HTTP_PORT), "--h2c-port", str(H2C_PORT)]
            )
            pod.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "controlplane.echo",
                "--host",
                spec.ip,
                *ports,
                "--name",
                spec.container,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                preexec_fn=_pdeathsig_preexec(),  # like LocalEnvoy: no pod outlives a killed run
            )
            self.pods.append(pod)
            self._readers.append(asyncio.create_task(self._read(pod)))
        try:
            await asyncio.wait_for(asyncio.gather(*(p.ready.wait() for p in self.pods)), timeout)
        except TimeoutError:
            late = [p.spec.name for p in self.pods if not p.ready.is_set()]
            raise RuntimeError(f"echo pods not ready within {timeout:g}s: {late}") from None
        dead = {
            p.spec.name: p.lines[-1][1] if p.lines else "(no output)"
            for p in self.pods
            if p.proc and p.proc.returncode is not None
        }
        if dead:
            raise OSError(
                f"echo pods exited at start (is port {HTTP_PORT} or {H2C_PORT} taken on all addresses?): {dead}"
            )

    async def _read(self, pod: Pod) -> None:
        assert pod.proc is not None and pod.proc.stdout is not None
        while True:
            raw = await pod.proc.stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            pod.lines.append((time.time(), line))
            if " listening on " in line:
                pod.ready.set()
        await pod.proc.wait()
        pod.ready.set()  # an exit before "listening" must not leave start() waiting

    def logs(self, namespace: str, app: str, since: float) -> list[str]:
        """Lines of every pod labelled ``app=<app>`` in the namespace, as ``kubectl logs --since-time``."""
        out: list[str] = []
        for pod in self.pods:
            if pod.spec.namespace == namespace and dict(pod.spec.labels).get("app") == app:
                out += pod.logs_since(since)
        return out

    def of(self, namespace: str, deployment: str) -> list[Pod]:
        return [p for p in self.pods if p.spec.namespace == namespace and p.spec.deployment == deployment]

    async def stop(self) -> None:
        for pod in self.pods:
            if pod.proc is not None and pod.proc.returncode is None:
                pod.proc.terminate()
        for pod in self.pods:
            if pod.proc is not None:
                try:
                    await asyncio.wait_for(pod.proc.wait(), 5)
                except TimeoutError:
                    pod.proc.kill()
                    await pod.proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
