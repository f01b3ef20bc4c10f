"""``mirrorplane translate DIR``: YAML in, Envoy JSON and Gateway API status out, no server.

The golden tests render through this same function, so a golden file is exactly what a user
sees from the command.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import ir
from .gatewayapi.translator import Options, translate
from .providers.files import FileProvider
from .xds.jsonview import resources_to_json
from .xds.translator import XdsOptions, build_resources


def translate_folder(
    root: Path, *, options: Options = Options(), xds_options: XdsOptions = XdsOptions()
) -> dict[str, Any]:
    """Everything a folder of YAML becomes: per-Gateway Envoy resources, status, and load errors."""
    provider = FileProvider(Path(root))
    store = provider.load()
    result = translate(store, options)
    base = provider.root if provider.root.is_dir() else provider.root.parent
    return {
        "gateways": {
            key: resources_to_json(build_resources(gw, xds_options)) for key, gw in sorted(result.gateways.items())
        },
        "status": {
            f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}": body
            for (kind, ns, name), body in sorted(result.statuses.items())
        },
        "mirrorPolicies": _policed_mirrors(result.gateways),
        "errors": [
            {
                "source": str(Path(e.source).relative_to(base)) if Path(e.source).is_relative_to(base) else e.source,
                "object": e.object,
                "message": e.message,
            }
            for errs in provider.errors.values()
            for e in errs
        ],
    }


def _policed_mirrors(gateways: dict[str, ir.GatewayIR]) -> list[dict[str, Any]]:
    """Each mirror a MirrorPolicy applies to, with everything it sets: the comparison settings
    appear nowhere in Envoy's config (shadow testing reads them), so this is where they show."""
    out = []
    for key, gw in sorted(gateways.items()):
        for lst in gw.listeners:
            for chain in lst.chains:
                for vh in chain.virtual_hosts:
                    for route in vh.routes:
                        for m in route.mirrors:
                            if m.policy is not None:
                                out.append({"gateway": key, "virtualHost": vh.name, "route": route.name, **asdict(m)})
    return out
