"""One leg of one request, as read from an Envoy upstream access log entry.

Only what the comparison needs is kept (a few hundred bytes per pending leg), so the pairing
window's memory is bounded by its entry count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2

from .tagging import CLUSTER_TAG, TAG

_METHODS = base_pb2.RequestMethod


@dataclass(slots=True)
class Leg:
    request_id: str
    cluster: str
    primary: bool  # False: a mirror leg (Envoy gives a shadow no route)
    tag: str  # the route's own tag, when routes carry it (XdsOptions.shadow_tags_in_routes)
    cluster_min: str  # the lowest sampling threshold of the rules mirroring to this cluster (mirror legs)
    status: int  # 0: no HTTP answer
    grpc_status: str
    size: int  # -1: unknown
    latency: float  # seconds from the upstream request's start to its last byte (or to its end)
    failure: str
    route: str = ""  # the Envoy route's name, which the tag table is read by (primary legs only)
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    digest: str = ""  # sha256 of the body as compared (comparison.body), set when the pair is joined
    excerpt: str = ""  # its start, to show beside a differing pair


# ResponseFlags that mean the leg got no (complete) HTTP answer from its upstream.
_FAILURE_FLAGS = (
    "upstream_connection_failure",
    "upstream_request_timeout",
    "upstream_remote_reset",
    "local_reset",
    "upstream_connection_termination",
    "upstream_overflow",
    "no_healthy_upstream",
    "upstream_max_stream_duration_reached",
    "no_route_found",
    "no_cluster_found",
    "overload_manager",
    "stream_idle_timeout",
)


def leg_from_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> Leg:
    common = entry.common_properties
    response = entry.response
    request = entry.request
    status = response.response_code.value
    failure = ",".join(f for f in _FAILURE_FLAGS if getattr(common.response_flags, f))
    if failure and common.upstream_transport_failure_reason:
        failure += ": " + common.upstream_transport_failure_reason
    if not status and not failure:
        failure = "no response"
    headers = dict(response.response_headers)
    grpc_status = response.response_trailers.get("grpc-status") or headers.get("grpc-status", "")
    return Leg(
        request_id=request.request_id,
        cluster=common.upstream_cluster,
        primary=bool(common.route_name),
        route=common.route_name,
        tag=common.custom_tags.get(TAG, ""),
        cluster_min=common.custom_tags.get(CLUSTER_TAG, ""),
        status=status,
        grpc_status=grpc_status,
        size=_size(headers, common.upstream_wire_bytes_received, response.upstream_header_bytes_received),
        latency=_seconds(common.time_to_last_upstream_rx_byte) or _seconds(common.duration),
        failure=failure,
        method=_METHODS.Name(request.request_method) if request.request_method else "",
        path=request.path,
        headers=headers,
    )


def _size(headers: dict[str, str], wire: int, head: int) -> int:
    """The body's size: Content-Length when the answer had one, else what came after the head
    (exact for HTTP/1.1 without chunking; chunk or HTTP/2 frame overhead otherwise)."""
    length = headers.get("content-length", "")
    if length.isdigit():
        return int(length)
    if wire and head and wire >= head:
        return wire - head
    return -1


def _seconds(d: duration_pb2.Duration) -> float:
    return float(d.seconds + d.nanos / 1e9)
