"""kubernetes-asyncio, without the generated API classes and models until someone asks for them.

The provider uses the library's config loaders (kubeconfig, exec plugins, in-cluster token),
``Configuration`` and ``ApiClient`` only (kubeapi.py reads the JSON itself). But every way in runs
``kubernetes_asyncio.client``'s ``__init__``, which imports all ~770 generated models and ~70 API
classes: 31 MB of a serving process's RSS and 0.1 s of import (more with no bytecode cache), for
nothing. So, before the package is first imported, it and ``client`` and ``client.models`` are
given modules that know where their files are (submodules import as usual) but have not run their
``__init__``; ``client`` gets the submodules and names the loaders and ApiClient import. The first lookup of any other name
(``client.CoreV1Api``, ``models.V1Pod``: the test suite's fake cluster uses them) runs the real
``__init__`` into that module, so the library stays whole for whoever wants it, paid when asked.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

_PACKAGE = "kubernetes_asyncio"


def _deferred(name: str, where: Path) -> types.ModuleType:
    """A package module for ``name`` whose ``__init__`` in ``where`` runs at the first missing name."""
    module = types.ModuleType(name, f"{name}: __init__ deferred by controlplane.providers.kubelib")
    module.__path__ = [str(where)]
    module.__file__ = str(where / "__init__.py")
    module.__package__ = name
    module.__spec__ = importlib.util.spec_from_file_location(
        name, where / "__init__.py", submodule_search_locations=[str(where)]
    )

    def whole(attr: str) -> Any:
        if attr.startswith("__") or module.__dict__.get("_kubelib_whole"):
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        module.__dict__["_kubelib_whole"] = True
        init = where / "__init__.py"
        exec(compile(init.read_bytes(), str(init), "exec"), module.__dict__)  # noqa: S102 - the package's own __init__
        return getattr(module, attr)

    module.__dict__["__getattr__"] = whole  # PEP 562: called for a name the module lacks
    return module


def _install() -> None:
    spec = importlib.util.find_spec(_PACKAGE)  # a top-level name: finds it without running it
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the import below says so
    root = Path(next(iter(spec.submodule_search_locations)))
    parent = None
    for name, where in ((_PACKAGE, root), ("client", root / "client"), ("models", root / "client" / "models")):
        module = _deferred(f"{parent.__name__}.{name}" if parent else name, where)
        sys.modules[module.__name__] = module
        if parent:
            setattr(parent, name, module)  # as the import system sets a submodule on its parent
        parent = module
    client = sys.modules[f"{_PACKAGE}.client"]
    # In the order they import each other: a missing name on ``client`` would run its __init__.
    for sub in ("exceptions", "configuration", "rest", "api_client"):
        importlib.import_module(f"{_PACKAGE}.client.{sub}")  # sets client.<sub>, as any import would
    for sub, attr in (("exceptions", "ApiException"), ("configuration", "Configuration"), ("api_client", "ApiClient")):
        setattr(client, attr, getattr(getattr(client, sub), attr))
    # Before any ``from kubernetes_asyncio import config``: that statement looks the name up on
    # the package first, and a missing one would run the package's __init__, which imports
    # ``dynamic`` (kubernetes-validate, jsonschema), ``stream``, ``utils`` and ``watch``: 2.7 MB.
    importlib.import_module(f"{_PACKAGE}.config")


if _PACKAGE not in sys.modules:
    _install()

from kubernetes_asyncio import config  # noqa: E402 - after the deferred modules above
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402

__all__ = ["ApiClient", "Configuration", "config"]
