"""The ``mirrorplane`` command's first step, before the program is imported.

Importing the program (gRPC, Envoy's messages, the web server) takes one core about 0.4 s. A
``serve`` or ``run`` of a folder with a large file starts that file's load helper first
(providers/loadhelper.py), so the second core is reading it meanwhile; the file provider's first
load takes the helper over. The folder is guessed before the real parse (the first argument that
names an existing folder or YAML file): a wrong guess costs a helper at the lowest priority, which
the load stops, and the command line is then parsed and checked as always.

The imports run with Python's cyclic garbage collector paused, and what they leave (about 90,000
objects: modules, classes, functions, compiled patterns, prebuilt messages, all alive until the
process ends) is then frozen out of its sight (``gc.freeze``). Left to the collector, the imports
paid for 130-140 collections, about 60 ms of the import's 0.45-0.6 s of CPU, and every full
collection later would scan those objects again. The price: the few reference cycles the imports
drop (about 1,800 objects, 0.4 MB: classes that attrs or a slotted dataclass made again, and
theirs) are frozen with the rest and never freed; a full collection to free them first would cost
more than the pause saves (docs/performance.md, "Cold start: the imports, ninth round").
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from .providers import loadhelper, yamlread


def main() -> int:
    folder = _start_load_helper(sys.argv[1:])
    gc.disable()
    try:
        from .cli import main as run

        if folder:
            from .providers import files  # noqa: F401  the load's own (the schema, CEL, the watch), imported by now
    finally:
        gc.freeze()
        gc.enable()
    return run()


def _start_load_helper(argv: list[str]) -> bool:
    """Whether a folder to serve was guessed (and its helper started)."""
    if not argv or argv[0] not in ("serve", "run") or "--kubernetes" in argv:
        return False
    for arg in argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and (path.is_dir() or (path.suffix in yamlread.SUFFIXES and path.is_file())):
            loadhelper.start_early(path, yamlread.Limits())
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
