"""The ``mirrorplane`` command's first step, before the program is imported.

Importing the program (gRPC, Envoy's messages, the web server) takes one core about 0.4 s. A
``serve`` or ``run`` of a folder with a large file starts that file's load helper first
(providers/loadhelper.py), so the second core is reading it meanwhile; the file provider's first
load takes the helper over. The folder is guessed before the real parse (the first argument that
names an existing folder or YAML file): a wrong guess costs a helper at the lowest priority, which
the load stops, and the command line is then parsed and checked as always.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .providers import loadhelper, yamlread


def main() -> int:
    _start_load_helper(sys.argv[1:])
    from .cli import main as run

    return run()


def _start_load_helper(argv: list[str]) -> None:
    if not argv or argv[0] not in ("serve", "run") or "--kubernetes" in argv:
        return
    for arg in argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and (path.is_dir() or (path.suffix in yamlread.SUFFIXES and path.is_file())):
            loadhelper.start_early(path, yamlread.Limits())
            return


if __name__ == "__main__":
    sys.exit(main())
