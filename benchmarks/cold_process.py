"""A cold start as its user sees it: ``mirrorplane serve DIR`` started as a process, an Envoy
started alongside (as compose or a cluster starts them), until Envoy serves the last of N routes.

    python -m benchmarks.cold_process [--routes 10000] [--rounds 5]

``benchmarks.change_latency`` times a cold start from ``ControlPlane.start`` in a process that has
imported the program already; this one also counts the interpreter's start and the imports
(gRPC, Envoy's messages, the web server: about 0.4 s of one core). Same workload (issue 12's: N
rules as ⌈N/16⌉ HTTPRoutes of 16 rules in routes.yaml, the Gateway and Services in base.yaml).

Two ways to start the same program, alternating round by round:

* ``python -m controlplane.cli serve``: the program imported first; the file provider then starts
  the load helper on the second core (how ``mirrorplane`` started before the eighth round);
* ``python -m controlplane.launch serve``: what the ``mirrorplane`` command runs now, the helper
  started before the imports, reading meanwhile.

And the floor of each round: a second Envoy started against the control plane once it serves
(Envoy's boot, the full push, Envoy applying it).

The control plane runs as installed: its modules' bytecode compiled before the first round
(``compileall``, into the checkout's ``__pycache__`` folders), as pip compiles a package it
installs (the Docker image's too, although its ``PYTHONDONTWRITEBYTECODE`` stops Python writing
any later). From a checkout with ``PYTHONDONTWRITEBYTECODE=1`` set, as on the machine these
figures come from, every start compiled mirrorplane's hundred modules again, about 0.15 s of the
serving process's CPU (not the load helper's: it runs isolated, ``python -I``, and keeps its
bytecode): ``--compile-at-start`` measures that way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

import controlplane
from controlplane.echo import build_app
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port

from .change_latency import GATEWAY, _host, _path, http_routes
from .served import until_served
from .workload import objects

Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
WAYS = {"program imported first": "controlplane.cli", "helper before the imports": "controlplane.launch"}


def _installed() -> dict[str, str]:
    """The environment of a control plane whose bytecode is compiled, as an installed one's is.
    (Not ``PYTHONPYCACHEPREFIX``: Python then looks for every module's bytecode there, the
    standard library's and the dependencies' too, and the first start compiles them all.)"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    package = Path(controlplane.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env=env, check=True)
    return env


async def _once(
    folder: Path, module: str, gw_port: int, probe: tuple[str, str], env: dict[str, str] | None
) -> tuple[float, float]:
    """(cold start, floor) in seconds for one start of ``module``."""
    xds_port = free_port()
    url = f"http://127.0.0.1:{gw_port}{probe[0]}"

    def envoy() -> LocalEnvoy:
        return LocalEnvoy(
            node_id=f"cold-{time.monotonic_ns()}",
            gateway=GATEWAY,
            xds_port=xds_port,
            admin_port=0,
            log_sink=lambda _: None,
        )

    command = [sys.executable, "-m", module, "serve", str(folder), "--xds-port", str(xds_port)]
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        plane = await asyncio.create_subprocess_exec(
            *command,
            "--http-port",
            str(free_port()),
            "--log-level",
            "warning",
            stdout=asyncio.subprocess.DEVNULL,
            env=env,
        )
        first = envoy()
        try:
            await first.start()
            cold = await asyncio.wait_for(until_served(session, url, probe[1], started), 120)
            await first.stop()
            second = envoy()
            started = time.perf_counter()
            await second.start()
            try:
                floor = await asyncio.wait_for(until_served(session, url, probe[1], started), 120)
            finally:
                await second.stop()
        finally:
            await first.stop()
            if plane.returncode is None:
                plane.send_signal(signal.SIGTERM)
            await plane.wait()
    return cold, floor


async def _main(n: int, rounds: int, compile_at_start: bool) -> None:
    echo_port, gw_port = free_port(), free_port()
    runner = web.AppRunner(build_app(name="backend", out=open(os.devnull, "w")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", echo_port).start()
    times: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = None if compile_at_start else _installed()
        base = objects(0, gateway_port=gw_port, endpoint_port=echo_port)
        (folder / "base.yaml").write_text(yaml.dump_all(base, Dumper=Dumper))
        (folder / "routes.yaml").write_text(yaml.dump_all(http_routes(n), Dumper=Dumper))
        probe = (_path(n - 1), _host(n - 1))  # the file's last route: the one a cold load reaches last
        for k in range(rounds):
            order = list(WAYS) if k % 2 == 0 else list(reversed(WAYS))
            for way in order:
                times[way].append(await _once(folder, WAYS[way], gw_port, probe, env))
                cold, floor = times[way][-1]
                print(f"round {k + 1} {way:<26} cold start {cold:5.2f} s, floor {floor:4.2f} s", flush=True)
    await runner.cleanup()
    bytecode = "compiled at every start" if compile_at_start else "compiled beforehand"
    print(f"N={n}, {rounds} rounds, bytecode {bytecode}, load average {os.getloadavg()[0]:.1f} at the end: medians")
    for way, pairs in times.items():
        cold = statistics.median(c for c, _ in pairs)
        floor = statistics.median(f for _, f in pairs)
        print(f"{way:<26} | cold start {cold:5.2f} s | floor {floor:4.2f} s | less its floor {cold - floor:5.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compile-at-start",
        action="store_true",
        help="no bytecode beforehand: with PYTHONDONTWRITEBYTECODE set, every start compiles the modules",
    )
    args = parser.parse_args()
    asyncio.run(_main(args.routes, args.rounds, args.compile_at_start))


if __name__ == "__main__":
    main()
