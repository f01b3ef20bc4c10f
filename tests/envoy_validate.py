"""``envoy --mode validate`` on a Gateway's resources: the oracle for what Envoy accepts.

ADS resources are made static (RDS → inline route_config, EDS → static endpoints) so that Envoy
runs the same validation a RouteConfiguration, Listener or Cluster gets when pushed, with no
control plane and no ports.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from controlplane.localenvoy import envoy_binary
from controlplane.xds.resources import Resources


def static_bootstrap(resources: Resources) -> bootstrap_pb2.Bootstrap:
    out = bootstrap_pb2.Bootstrap()
    for cluster in resources.clusters.values():
        static = out.static_resources.clusters.add()
        static.CopyFrom(cluster)
        if static.type == static.EDS:
            static.ClearField("eds_cluster_config")
            static.type = static.STATIC
            if cluster.name in resources.endpoints:
                static.load_assignment.CopyFrom(resources.endpoints[cluster.name])
    for listener in resources.listeners.values():
        static_listener = out.static_resources.listeners.add()
        static_listener.CopyFrom(listener)
        for chain in static_listener.filter_chains:
            manager = hcm.HttpConnectionManager()
            chain.filters[0].typed_config.Unpack(manager)
            manager.route_config.CopyFrom(resources.routes[manager.rds.route_config_name])
            manager.ClearField("rds")
            chain.filters[0].typed_config.Pack(manager, deterministic=True)
    return out


def envoy_rejects(resources: Resources) -> str | None:
    """Envoy's error for these resources, or None when it accepts them."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "bootstrap.json")
        config.write_text(json_format.MessageToJson(static_bootstrap(resources)))
        done = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(config), "-l", "critical"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    return None if done.returncode == 0 else (done.stdout + done.stderr).strip()
