"""Kubeconfig files for the fake API server, readable by kubectl and kubernetes-asyncio."""

from __future__ import annotations

import os

import yaml


def write_kubeconfig(path: str | os.PathLike[str], server: str, namespace: str = "default") -> str:
    """Write a one-context kubeconfig pointing at ``server`` and return its path.

    Plain http:// needs no TLS settings in either client. The token is a
    placeholder: the fake does not authenticate, but clients then behave as
    with a real service-account login.
    """
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        "current-context": "fake",
        "preferences": {},
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return os.fspath(path)
