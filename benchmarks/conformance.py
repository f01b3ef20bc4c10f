"""Wall time of the whole Gateway API conformance run and the time of each test.

    python -m benchmarks.conformance [--concurrency 4]

Runs the same suite as `make conformance` (conformance/, real Envoys and echo pods) and prints
the setup-to-end wall time, then every test's seconds, slowest first.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics

from conformance import suite


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conformance", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=4, help="tests run at once (default: %(default)s)")
    args = parser.parse_args()
    logging.getLogger("mirrorplane").setLevel(logging.ERROR)  # status warnings are the tests' business
    run = asyncio.run(suite.run(concurrency=args.concurrency, out=io.StringIO()))
    timed = sorted((r for r in run.results if r.outcome != "Skipped"), key=lambda r: -r.seconds)
    seconds = [r.seconds for r in timed]
    print(
        f"conformance: {len(timed)} tests in {run.seconds:.1f}s wall (concurrency {args.concurrency}); "
        f"per test median {statistics.median(seconds):.2f}s, mean {statistics.mean(seconds):.2f}s, max {seconds[0]:.2f}s"
    )
    for r in timed:
        print(f"  {r.test.short_name:<55} {r.seconds:6.2f}s  {r.outcome}")


if __name__ == "__main__":
    main()
