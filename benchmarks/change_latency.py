"""What a change costs: one route edited → a real Envoy applied it, at 100, 1,000 and 10,000 routes.

    python -m benchmarks.change_latency [--routes 100 1000 10000] [--rounds 5]
        [--no-kubernetes | --kubernetes-only [--kubernetes-routes 10000] [--no-status-writer]]

Workload (the one issue 12 was measured on): N Envoy routes, each with a 50 % RequestMirror, as
⌈N/16⌉ HTTPRoutes of 16 rules in one routes.yaml (the Gateway, Services and EndpointSlices in
base.yaml); one real Envoy on Delta ADS. Per N, in a fresh process (so that RSS is its own):

* cold start: ControlPlane.start (loading the folder), then Envoy start, as ``mirrorplane run``
  starts them → Envoy serves all N routes; its floor is a fresh Envoy against the already warm
  control plane (Envoy boot + full push). Then, in another fresh process, the same cold start with
  the Envoy started alongside the control plane, as compose or a cluster starts them (Envoy boots
  while the folder loads);
* one route changed: routes.yaml rewritten with one path changed → Envoy serves the new path,
  median of ``--rounds``; its floor is the same kind of change as a snapshot prebuilt beforehand
  and installed in the cache (ADS + Envoy alone). Each starts with no push in flight. Beside
  both, the time until the RouteConfiguration was sent (the registry's SEND): the control
  plane's own share, which Envoy's applying time, the larger and far less steady, leaves out;
* RSS of the control-plane process with the Envoy attached (it also holds the benchmark's echo
  backend and HTTP client, a few MB): once the Envoy serves all N routes, again once what the cold
  start set off is done (Kubernetes: the status writes), and after the first change;
* the longest event-loop stall (a 5 ms ticker's worst lateness) during the cold load and during
  the changes.

Then the Kubernetes provider against tests/fakeapi: 10,000 HTTPRoutes of one rule listed at start,
then one patched per round (a merge patch over HTTP, what ``kubectl patch --type merge`` sends),
same measures. The fake API server runs in a process of its own (``python -m fakeapi``), as a real
one would: its LIST encoding, watch fan-out and memory are not counted as the control plane's
(its RSS is printed beside). It still shares the machine's cores, as it did in the process. The
control plane runs as ``serve --kubernetes --no-leader-election`` does, writing Gateway API
status back (10,000 status PATCHes at start), unless ``--no-status-writer``; the changes are
measured once those writes are done (how long they took, the loop's longest stall meanwhile
with how much of it the loop's thread ran or waited for a CPU, and the longest garbage collection
are printed). "Applied" is always observed the same way: an HTTP request through Envoy
for the changed path stops answering 404.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from controlplane.echo import build_app
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER, translate
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.serve import ControlPlane
from controlplane.xds.cache import Snapshot
from controlplane.xds.resources import ROUTE
from controlplane.xds.tracking import Event, EventKind
from controlplane.xds.translator import XdsOptions, build_resources

from .fakeapi_process import FakeApiProcess, write_seed
from .procstat import rss_mib
from .served import until_served
from .workload import NAMESPACE, SERVICES, objects

GATEWAY = f"{NAMESPACE}/gw"
RULES = 16  # an HTTPRoute's maximum number of rules

# Quoted from issue 12 (measured there, not here): the reference this benchmark is read against.
QUOTED = {
    "sovereign": "Sovereign (quoted, same workload): one change → applied 1.2–1.3 s at 100–10,000 routes; "
    "cold start at 10k 0.95 s; RSS at 10k with an Envoy 152 MB",
    "before": "mirrorplane before this work (quoted): one change → applied 0.10 / 0.85 / 8.95 s at 100 / 1k / 10k; "
    "cold start at 10k 8.93 s; RSS at 10k 241 MB",
}

Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _path(i: int) -> str:
    return f"/r{i}"


def _host(i: int) -> str:
    return f"host-{i // RULES}.example.com"


def http_route(j: int, n: int) -> dict[str, Any]:
    """The j-th of the HTTPRoutes of ``http_routes(n)``."""
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": _path(i)}}],
            "filters": [
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": {"name": f"mirror-{i % SERVICES}", "port": 8080},
                        "percent": 50,
                    },
                }
            ],
            "backendRefs": [{"name": f"svc-{i % SERVICES}", "port": 8080}],
        }
        for i in range(j * RULES, min(n, (j + 1) * RULES))
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"routes-{j}", "namespace": NAMESPACE},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [f"host-{j}.example.com"], "rules": rules},
    }


def http_routes(n: int) -> list[dict[str, Any]]:
    """⌈n/16⌉ HTTPRoutes carrying n rules, each a path match with a 50 % mirror."""
    return [http_route(j, n) for j in range(math.ceil(n / RULES))]


class StallMeter:
    """The event loop's worst lateness: a task that asks to wake every 5 ms and notes how late it is.

    Where Linux tells (``/proc/self/task/<tid>/schedstat``), it also notes how much of the worst
    lateness the loop's thread spent running and how much runnable but waiting for a CPU: the
    fake API server and the Envoy share the 2 cores, and a stall spent waiting for a CPU is not
    the control plane's code holding the loop."""

    TICK = 0.005

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_split = (0.0, 0.0)  # of the worst: seconds running, seconds runnable-waiting
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        schedstat = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")
        while True:
            before, sched = time.perf_counter(), _schedstat(schedstat)
            await asyncio.sleep(self.TICK)
            late = time.perf_counter() - before - self.TICK
            if late > self.worst:
                self.worst = late
                after = _schedstat(schedstat)
                self.worst_split = (after[0] - sched[0], after[1] - sched[1])

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def take_split(self) -> tuple[float, float]:
        """Of the worst lateness taken last: seconds on a CPU, seconds waiting for one."""
        split, self.worst_split = self.worst_split, (0.0, 0.0)
        return split

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _schedstat(path: Path) -> tuple[float, float]:
    """Seconds a thread has run, and waited runnable for a CPU (0, 0 where Linux does not tell)."""
    try:
        running, waiting = path.read_text().split()[:2]
    except OSError:
        return 0.0, 0.0
    return int(running) / 1e9, int(waiting) / 1e9


class GcMeter:
    """The longest garbage collection in the event loop's thread: a full collection holds the
    interpreter for as long as it takes, which grows with the objects it scans."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._began = 0.0
        self._thread = threading.get_ident()

    def note(self, phase: str, _info: dict[str, int]) -> None:
        if threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.worst = max(self.worst, time.perf_counter() - self._began)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


class Bench:
    """One control plane + one Envoy + an echo backend, and the measures common to both providers."""

    def __init__(self, n: int, make_plane: Callable[[XdsOptions, int], ControlPlane]) -> None:
        self.n = n
        self.make_plane = make_plane
        self.echo_port, self.gw_port, self.xds_port = free_port(), free_port(), free_port()
        self.xds_options = XdsOptions(bind_address="127.0.0.1", port_map={8000: self.gw_port})
        self.url = f"http://127.0.0.1:{self.gw_port}"
        self.stalls = StallMeter()
        self.collections = GcMeter()
        self.out: dict[str, Any] = {"n": n}
        self.on_cold: Callable[[], None] = lambda: None  # more measures, taken with the RSS
        # Whether what a cold start sets off beside serving is done (Kubernetes: the status writes).
        self.settled: Callable[[ControlPlane], bool] = lambda _: True

    async def served(self, session: aiohttp.ClientSession, path: str, host: str, started: float) -> float:
        return await asyncio.wait_for(until_served(session, self.url + path, host, started), 120)

    def envoy(self) -> LocalEnvoy:
        return LocalEnvoy(
            node_id=f"bench-{time.monotonic_ns()}",
            gateway=GATEWAY,
            xds_port=self.xds_port,
            admin_port=0,
            log_sink=lambda _: None,
        )

    async def run(
        self,
        rounds: int,
        probe: tuple[str, str],
        change: Callable[[int], Awaitable[tuple[str, str]]],
        prebuilt: Callable[[ControlPlane, int], tuple[str, str, Snapshot]],
        *,
        alongside: bool = False,
    ) -> dict[str, Any]:
        runner = web.AppRunner(build_app(name="backend", out=open("/dev/null", "w")), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.echo_port).start()
        self.stalls.start()
        gc.callbacks.append(self.collections.note)
        await asyncio.sleep(2 * StallMeter.TICK)  # the ticker runs: a stall from here on is seen
        async with aiohttp.ClientSession() as session:
            self.stalls.take()
            started = cold_started = time.perf_counter()
            plane = self.make_plane(self.xds_options, self.xds_port)
            updates: list[float] = []  # seconds of each controller update (translate → snapshot)
            plane.controller.update_listeners.append(lambda seconds, _: updates.append(seconds))
            sent: list[float] = []  # when each RouteConfiguration push was sent to an Envoy

            def on_event(event: Event) -> None:
                if event.kind is EventKind.SEND and event.type_url == ROUTE:
                    sent.append(time.perf_counter())

            plane.registry.add_observer(on_event)
            envoy = self.envoy()
            if alongside:  # as compose or a cluster starts them: Envoy boots while the folder loads
                await asyncio.gather(plane.start(), envoy.start())
            else:  # as `mirrorplane run` starts them: Envoy once the Gateways are known
                await plane.start()
                self.out["cold_plane_s"] = time.perf_counter() - started  # loaded and translated
                await envoy.start()
                self.out["cold_envoy_s"] = time.perf_counter() - started  # Envoy's admin answers
            self.out["cold_s"] = await self.served(session, *probe, started)
            self.out["cold_controller_s"] = sum(updates)
            self.out["stall_cold_ms"] = self.stalls.take() * 1e3
            self.collections.take()
            self.out["rss_mb"] = rss_mib()
            if alongside:  # only the cold start is measured this way
                await envoy.stop()
                await plane.stop()
                await runner.cleanup()
                self.stalls.stop()
                gc.callbacks.remove(self.collections.note)
                return self.out
            self.on_cold()
            # Floor of a cold start: a new Envoy against the warm control plane.
            await envoy.stop()
            started = time.perf_counter()
            envoy = self.envoy()
            await envoy.start()
            self.out["cold_floor_s"] = await self.served(session, *probe, started)
            while not self.settled(plane):
                await asyncio.sleep(0.05)
            self.out["settled_s"] = time.perf_counter() - cold_started
            self.out["stall_settle_ms"] = self.stalls.take() * 1e3
            self.out["gc_settle_ms"] = self.collections.take() * 1e3
            self.out["stall_settle_split_ms"] = [t * 1e3 for t in self.stalls.take_split()]
            self.out["rss_settled_mb"] = rss_mib()  # what the start-up writes (Kubernetes) left held
            changes, floors, stalls, controller, pushed, floor_pushed = [], [], [], [], [], []
            for k in range(rounds):
                # Envoy serves a push before it answers it, and one response per type is in flight
                # at a time: a change made as soon as the floor's route was served waited for that
                # answer, and its translation shared the CPUs with Envoy finishing the floor's push
                # (its ACK came 83-91 ms into the change in a traced run). Each change starts, as the floor does,
                # with nothing pushing.
                await plane.registry.answered()
                await asyncio.sleep(0.05)
                self.stalls.take()  # not the floor's preparation below, which blocks the loop on purpose
                started = time.perf_counter()
                updates.clear()
                sent.clear()
                path, host = await change(k)
                changes.append(await self.served(session, path, host, started))
                pushed.append(sent[0] - started)  # the control plane's own share: until the push went out
                if k == 0:  # before the floor's first prebuilt snapshot, a translation of its own
                    self.out["rss_changed_mb"] = rss_mib()
                controller.append(sum(updates))
                stalls.append(self.stalls.take())
                path, host, snapshot = prebuilt(plane, k)
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                sent.clear()
                plane.cache.install(snapshot)
                floors.append(await self.served(session, path, host, started))
                floor_pushed.append(sent[0] - started)
            await envoy.stop()
            await plane.stop()
        self.stalls.stop()
        gc.callbacks.remove(self.collections.note)
        await runner.cleanup()
        self.out.update(
            change_ms=statistics.median(changes) * 1e3,
            change_max_ms=max(changes) * 1e3,
            floor_ms=statistics.median(floors) * 1e3,
            controller_ms=statistics.median(controller) * 1e3,
            pushed_ms=statistics.median(pushed) * 1e3,
            floor_pushed_ms=statistics.median(floor_pushed) * 1e3,
            stall_change_ms=max(stalls) * 1e3,
            rounds=rounds,
        )
        return self.out


def _changed_route(n: int, paths: dict[int, str], i: int, path: str) -> dict[str, Any]:
    """The HTTPRoute of rule ``i`` as the file holds it (``paths``: the rules edited so far), with
    rule ``i``'s path set to ``path``."""
    doc = http_route(i // RULES, n)
    for rule, value in {**paths, i: path}.items():
        if rule // RULES == i // RULES:
            doc["spec"]["rules"][rule % RULES]["matches"][0]["path"]["value"] = value
    return doc


def _prebuilt(plane: ControlPlane, store: Store, doc: dict[str, Any], xds_options: XdsOptions) -> Snapshot:
    # Imported here, as `serve --kubernetes` imports neither: the Kubernetes child's RSS is measured before.
    from controlplane.gatewayapi import schema

    new = from_dict(schema.validate(doc))
    changed = Store.from_objects([*(o for o in store.objects() if o.key != new.key), new])
    resources = build_resources(translate(changed).gateways[GATEWAY], xds_options)
    return Snapshot.build(GATEWAY, resources, previous=plane.cache.get(GATEWAY))


def _index(n: int, k: int) -> int:
    return (k * 7919 + n // 2) % n  # spread over the file, never the last route (the cold-start probe)


async def files_child(n: int, rounds: int, alongside: bool = False) -> dict[str, Any]:
    from controlplane.providers.files import FileProvider

    # The documents themselves are not kept: at 10,000 routes their 16 MB would count in the RSS
    # measured for the control plane, which shares this process.
    edited: dict[int, str] = {}  # rule → its path, for the rules changed so far
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench = Bench(
            n,
            lambda xo, port: ControlPlane(
                FileProvider(folder), xds_host="127.0.0.1", xds_port=port, http_port=None, xds_options=xo
            ),
        )
        (folder / "base.yaml").write_text(yaml.dump_all(objects(0, endpoint_port=bench.echo_port), Dumper=Dumper))
        text = yaml.dump_all(http_routes(n), Dumper=Dumper)
        (folder / "routes.yaml").write_text(text)
        state = {"text": text}

        async def change(k: int) -> tuple[str, str]:
            i = _index(n, k) if n > 1 else 0
            old = f"value: {_path(i)}\n"
            assert state["text"].count(old) == 1, old
            state["text"] = state["text"].replace(old, f"value: {_path(i)}-v{k}\n")
            edited[i] = f"{_path(i)}-v{k}"
            tmp_file = folder / ".routes.tmp"
            tmp_file.write_text(state["text"])
            tmp_file.replace(folder / "routes.yaml")  # an editor's atomic save
            return f"{_path(i)}-v{k}", _host(i)

        def prebuilt(plane: ControlPlane, k: int) -> tuple[str, str, Snapshot]:
            i = (_index(n, k) + 1) % max(n - 1, 1)
            path = f"{_path(i)}-b{k}"
            provider = plane.provider
            assert isinstance(provider, FileProvider)
            store = provider.store()
            return path, _host(i), _prebuilt(plane, store, _changed_route(n, edited, i, path), bench.xds_options)

        out = await bench.run(rounds, (_path(n - 1), _host(n - 1)), change, prebuilt, alongside=alongside)
    out["provider"] = "files"
    return out


async def kubernetes_child(n: int, rounds: int, status: bool) -> dict[str, Any]:
    from controlplane.providers.k8s_status import KubernetesStatus
    from controlplane.providers.kubernetes import KubernetesProvider

    from .workload import route

    def host(i: int) -> str:  # one HTTPRoute, one hostname per route
        return f"host-{i}.example.com"

    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig, seed = Path(tmp) / "kubeconfig", Path(tmp) / "seed.jsonl"

        def plane(xo: XdsOptions, port: int) -> ControlPlane:
            provider = KubernetesProvider(kubeconfig)
            # As `serve --kubernetes --no-leader-election`: status is written back (10,000 PATCHes at start).
            extensions = [KubernetesStatus(provider, controller_name=DEFAULT_CONTROLLER)] if status else []
            return ControlPlane(
                provider, xds_host="127.0.0.1", xds_port=port, http_port=None, xds_options=xo, extensions=extensions
            )

        def statuses_written(plane: ControlPlane) -> bool:
            """Every status the first translation wants is written (10,000 PATCHes): the changes
            are measured after, not during, that start-up storm."""
            writers = [e.writer for e in plane.extensions if isinstance(e, KubernetesStatus)]
            return all(w is not None and w.writes >= len(w.wanted) for w in writers)

        bench = Bench(n, plane)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        # One HTTPRoute per route, as issue 12 asks.
        write_seed(seed, [namespace, *objects(0, endpoint_port=bench.echo_port), *(route(i) for i in range(n))])
        async with FakeApiProcess(seed, kubeconfig) as api, aiohttp.ClientSession() as client:
            routes = f"{api.url}/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes"

            async def change(k: int) -> tuple[str, str]:
                i = _index(n, k)
                path = f"/r{i}-v{k}"
                rule = {**route(i)["spec"]["rules"][0], "matches": [{"path": {"type": "PathPrefix", "value": path}}]}
                async with client.patch(  # what `kubectl patch --type merge` sends
                    f"{routes}/route-{i}",
                    data=json.dumps({"spec": {"rules": [rule]}}),
                    headers={"Content-Type": "application/merge-patch+json", "Authorization": "Bearer fake-token"},
                ) as resp:
                    resp.raise_for_status()
                return path, host(i)

            def prebuilt(plane: ControlPlane, k: int) -> tuple[str, str, Snapshot]:
                i = (_index(n, k) + 1) % (n - 1)
                path = f"/r{i}-b{k}"
                doc = route(i)
                doc["spec"]["rules"][0]["matches"][0]["path"]["value"] = path
                provider = plane.provider
                assert isinstance(provider, KubernetesProvider)
                return path, host(i), _prebuilt(plane, provider.store, doc, bench.xds_options)

            bench.on_cold = lambda: bench.out.update(fake_api_rss_mb=api.rss_mb())
            bench.settled = statuses_written
            out = await bench.run(rounds, (_path(n - 1), host(n - 1)), change, prebuilt)
    out["provider"] = "kubernetes"
    out["status_writer"] = status
    return out


def _child(provider: str, n: int, rounds: int, timeout: float, *extra: str) -> dict[str, Any] | None:
    argv = [sys.executable, "-m", "benchmarks.change_latency", "--child", provider, str(n), "--rounds", str(rounds)]
    argv += extra
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"{provider} N={n}: gave up after {timeout:.0f} s")
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"{provider} N={n}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(lines[-1])


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['provider']:<10} N={r['n']:>6} | one route changed → Envoy applied: median {r['change_ms']:7.1f} ms"
        f" (max {r['change_max_ms']:6.1f}, {r['rounds']} rounds), floor {r['floor_ms']:6.1f} ms,"
        f" {r['change_ms'] / r['floor_ms']:4.1f}x; of it translate→snapshot {r['controller_ms']:5.1f} ms,"
        f" until the push was sent {r['pushed_ms']:5.1f} ms (floor {r['floor_pushed_ms']:4.1f})"
        f" | cold start {r['cold_s']:5.2f} s (floor {r['cold_floor_s']:4.2f} s, {r['cold_s'] / r['cold_floor_s']:4.1f}x;"
        f" translate→snapshot {r['cold_controller_s']:4.2f} s"
        + (f"; {r['cold_alongside_s']:4.2f} s with Envoy started alongside)" if "cold_alongside_s" in r else ")")
        + f" | RSS {r['rss_mb']:4.0f} MB (once settled {r['rss_settled_mb']:4.0f}, after one change"
        f" {r['rss_changed_mb']:4.0f}) | longest loop stall: cold {r['stall_cold_ms']:5.0f} ms,"
        f" changes {r['stall_change_ms']:4.0f} ms",
        flush=True,
    )
    if r["provider"] == "kubernetes":
        print(
            f"{'':<10} cold start: ControlPlane.start returned after {r['cold_plane_s']:.2f} s (listing, then the"
            f" first translation), Envoy started after {r['cold_envoy_s']:.2f} s, all routes served after"
            f" {r['cold_s']:.2f} s",
            flush=True,
        )
        print(
            f"{'':<10} fake API server in its own process (RSS {r['fake_api_rss_mb']:.0f} MB, not counted above);"
            + (
                f" status written back: all {r['settled_s']:.2f} s after the start, longest loop stall meanwhile"
                f" {r['stall_settle_ms']:.0f} ms (the loop's thread ran {r['stall_settle_split_ms'][0]:.0f} ms of it,"
                f" waited for a CPU {r['stall_settle_split_ms'][1]:.0f} ms), longest garbage collection"
                f" meanwhile {r['gc_settle_ms']:.0f} ms; the changes are measured after that"
                if r["status_writer"]
                else " status not written (--no-status-writer)"
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kubernetes-routes", type=int, default=10000)
    parser.add_argument("--no-kubernetes", action="store_true")
    parser.add_argument("--kubernetes-only", action="store_true", help="the Kubernetes part alone (no --routes)")
    parser.add_argument(
        "--no-status-writer", action="store_true", help="Kubernetes: do not write status back (serve does)"
    )
    parser.add_argument("--child", nargs=2, metavar=("PROVIDER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        provider, n = args.child[0], int(args.child[1])
        if provider in ("files", "files-alongside"):
            measured = asyncio.run(files_child(n, args.rounds, alongside=provider == "files-alongside"))
        else:
            measured = asyncio.run(kubernetes_child(n, args.rounds, status=not args.no_status_writer))
        print(json.dumps(measured))
        return
    print(QUOTED["sovereign"])
    print(QUOTED["before"])
    for n in [] if args.kubernetes_only else args.routes:
        result = _child("files", n, args.rounds, timeout=480)  # bounded: a slow provider is reported, not waited for
        if result:
            alongside = _child("files-alongside", n, args.rounds, timeout=120)
            if alongside:
                result["cold_alongside_s"] = alongside["cold_s"]
            _print(result)
    if not args.no_kubernetes:
        extra = ["--no-status-writer"] if args.no_status_writer else []
        result = _child("kubernetes", args.kubernetes_routes, args.rounds, 400, *extra)
        if result:
            _print(result)


if __name__ == "__main__":
    main()
