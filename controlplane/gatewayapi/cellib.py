"""The CEL library (``common-expression-language``), without the command-line tool its package
imports.

``import cel`` runs the package's ``__init__``, which imports ``cel.cli``, an interactive REPL
built on typer, rich and prompt_toolkit: about 0.1 s and 9 MB of a serving process's RSS (23 MB
in a bare interpreter), for a tool mirrorplane never runs. The evaluator itself is the Rust
extension (5 MB). So ``cel.cli`` is given an empty module before the package is first imported;
``python -m cel`` in another process is unaffected. Every user of the library imports it from
here, so that the empty module is in place whichever imports first.
"""

from __future__ import annotations

import sys
import types

if "cel" not in sys.modules:
    sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli", "not imported by mirrorplane (see cellib)"))

import cel  # noqa: E402 - after the empty cel.cli above
from cel.stdlib import EXTENSIONS  # noqa: E402

__all__ = ["EXTENSIONS", "cel"]
