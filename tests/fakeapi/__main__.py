"""The fake API server as a process of its own, for benchmarks (and a manual look with kubectl).

    cd tests && python -m fakeapi [--port P] [--kubeconfig PATH] [--seed FILE ...] [--no-validate]

A real API server is another process on another machine. In the benchmark's own process, the
fake's JSON encoding of a 10,000-object LIST, its watch fan-out and its memory would compete with
the control plane for the interpreter lock and count in the control plane's RSS. Run like this,
it serves until its stdin closes (the parent exited) or it gets SIGTERM/SIGINT. It prints one line,
``ready <url>``, once it accepts connections; everything after the seed goes over HTTP, as to a
real server (``kubectl``, merge patches).

``--seed`` files hold the objects to create first, as the server's own writes (validated and
defaulted like a POST unless ``--no-validate``): one JSON object per line (``.jsonl``), or YAML
documents.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from .server import FakeApiServer

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _objects(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [doc for doc in yaml.load_all(text, Loader=Loader) if doc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fakeapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for kubectl and the control plane here")
    parser.add_argument("--seed", type=Path, action="append", default=[], help="objects to create before serving")
    parser.add_argument("--no-validate", action="store_true", help="store seeded and written objects as sent")
    args = parser.parse_args(argv)
    api = FakeApiServer(port=args.port, validate=not args.no_validate)
    for path in args.seed:
        for obj in _objects(path):
            api.store.create(api.store.registry.for_object(obj), obj)
    api.start()
    if args.kubeconfig:
        api.write_kubeconfig(args.kubeconfig)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def stdin_closed() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=stdin_closed, daemon=True).start()
    print(f"ready {api.url}", flush=True)
    done.wait()
    api.stop()


if __name__ == "__main__":
    main()
