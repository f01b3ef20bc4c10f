"""Envoy resources as JSON: the one rendering shared by golden files, `mirrorplane translate`
and the admin API, so that what a reviewer reads is what an operator sees."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from .resources import SHORT_NAMES, Resources


def resource_to_json(message: Message) -> dict[str, Any]:
    """One Envoy resource as protobuf JSON with the .proto field names (as Envoy's config dump)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def resources_to_json(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """Per type (clusters, endpoints, listeners, routes), the resources sorted by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for type_url, named in resources.items():
        out[SHORT_NAMES[type_url]] = [resource_to_json(named[name]) for name in sorted(named)]
    return out
