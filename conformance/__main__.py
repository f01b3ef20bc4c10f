"""``python -m conformance``: run the suite, print one line per test, write the report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import report, suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("conformance-report.yaml"),
        help="where to write the ConformanceReport (default: %(default)s)",
    )
    parser.add_argument(
        "--run-test", action="append", default=[], metavar="NAME", help="run only this test (repeatable)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="tests run at once (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep each test's folder of YAML for inspection")
    parser.add_argument("--verbose", action="store_true", help="show mirrorplane's own log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s %(message)s")
    result = asyncio.run(suite.run(args.run_test or None, concurrency=args.concurrency, keep=args.keep))
    doc = report.build(result)
    args.report.write_text(report.dump(doc))
    print(report.summary(result), flush=True)
    print(f"report: {args.report}", flush=True)
    failed = [r for r in result.results if r.outcome == "Failed"]
    return 1 if failed or any(report.feature_mismatch(result)) else 0


if __name__ == "__main__":
    sys.exit(main())
