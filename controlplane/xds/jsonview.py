"""Envoy resources as JSON: the one rendering shared by golden files, `mirrorplane translate`
and the admin API, so that what a reviewer reads is what an operator sees."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from .resources import SHORT_NAMES, Resources


def resources_to_json(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """Per type (clusters, endpoints, listeners, routes), the resources sorted by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for type_url, named in resources.items():
        out[SHORT_NAMES[type_url]] = [
            json_format.MessageToDict(named[name], preserving_proto_field_name=True) for name in sorted(named)
        ]
    return out
