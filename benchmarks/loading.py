"""Reading a folder of YAML: a cold load, and the reloads the per-document cache makes cheap.

    python -m benchmarks.loading [N ...] [--rules 16]     (default: 1000 5000, one rule per HTTPRoute)

N mirrored routes (with their Gateway and Services) in one file: N HTTPRoutes of one rule, or with
``--rules 16`` the change_latency workload (⌈N/16⌉ HTTPRoutes of 16 rules in routes.yaml, the
Gateway, Services and EndpointSlices in base.yaml). Figures: cutting the file into documents and
hashing them (``yamlread.chunks``), a cold ``FileProvider.load`` (wall and CPU time: the machine
may be shared), a reload after one HTTPRoute changed, and a reload of identical bytes. The cold
load runs in a fresh process, so that it also pays for compiling the schemas, as a starting
server does. Peers measured in the same run: ``yaml.load_all`` with libyaml's C loader (the
floor for parsing the file at all) and PyYAML's pure-Python ``safe_load_all`` (what main used).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from controlplane.gcpause import paused_gc
from controlplane.providers import yamlread
from controlplane.providers.files import FileProvider

from .workload import objects

Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# A cold load as a starting server does it: a fresh interpreter, the imports done before the clock.
_COLD = """
import sys, time
from pathlib import Path
from controlplane.providers.files import FileProvider
provider = FileProvider(Path(sys.argv[1]))
started, cpu = time.perf_counter(), time.process_time()
provider.load()
print(time.perf_counter() - started, time.process_time() - cpu)
"""


def _timed(fn: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def _cold(folder: Path) -> tuple[float, float]:
    """A cold load's wall and CPU seconds."""
    out = subprocess.run([sys.executable, "-c", _COLD, str(folder)], check=True, capture_output=True, text=True)
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def _write(folder: Path, n: int, rules: int) -> Path:
    """The folder's files; returns the one holding the routes."""
    if rules == 1:
        (folder / "routes.yaml").write_text(yaml.dump_all(objects(n), Dumper=Dumper, sort_keys=False))
    else:
        from .change_latency import http_routes  # the 16-rule shape (RULES there)

        (folder / "base.yaml").write_text(yaml.dump_all(objects(0), Dumper=Dumper))
        (folder / "routes.yaml").write_text(yaml.dump_all(http_routes(n), Dumper=Dumper))
    return folder / "routes.yaml"


def run(n: int, rules: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), n, rules)
        text = path.read_text()
        c_load = _timed(lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)))
        pure_load = _timed(lambda: list(yaml.safe_load_all(text)))
        with paused_gc():  # as FileProvider.load runs it
            split = _timed(yamlread.chunks, text)
        load = os.getloadavg()[0]
        cold, cold_cpu = _cold(Path(tmp))
        provider = FileProvider(Path(tmp))
        provider.load()
        edited = text.replace("host-0.example.com", "host-0-edited.example.com", 1)
        assert edited != text
        path.write_text(edited)
        one = _timed(provider.load)
        same = _timed(provider.load)
    mib = len(text.encode()) / 2**20
    shape = f"{rules}-rule HTTPRoutes" if rules > 1 else "one-rule HTTPRoutes"
    print(f"{n} routes as {shape}, {mib:.1f} MiB in one file")
    print(f"  peer yaml.load_all (C loader)                {c_load * 1000:8.0f} ms")
    print(f"  peer yaml.safe_load_all (pure)               {pure_load * 1000:8.0f} ms")
    print(f"  cut into chunks and hash them                {split * 1000:8.0f} ms   {split / c_load:.3f}x the C load")
    print(f"  cold load (parse+validate+store)             {cold * 1000:8.0f} ms   {cold_cpu * 1000:.0f} ms CPU")
    print(f"  (load average {load:.2f} before the cold load)")
    print(f"  reload, one route changed                    {one * 1000:8.0f} ms   {cold / one:.1f}x faster than cold")
    print(f"  reload, same bytes                           {same * 1000:8.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("routes", nargs="*", type=int, default=[1000, 5000])
    parser.add_argument(
        "--rules", type=int, choices=(1, 16), default=1, help="rules per HTTPRoute (16: change_latency's)"
    )
    args = parser.parse_args()
    for n in args.routes:
        run(n, args.rules)


if __name__ == "__main__":
    main()
