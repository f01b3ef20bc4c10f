"""The verdict on one pair: did the mirror answer like the primary?"""

from __future__ import annotations

from .entries import Leg

RESULTS = ("same", "status_differs", "body_differs", "headers_differ", "mirror_failed", "unpaired")
SIZE_HEADERS = frozenset({"content-length"})  # compared as the size, not as a header


def compare(primary: Leg, mirror: Leg, headers: tuple[str, ...]) -> tuple[str, str]:
    """(result, detail). The first difference in this order wins: no answer, status, body, headers."""
    if mirror.failure or not mirror.status:
        return "mirror_failed", mirror.failure or "no response"
    if primary.status != mirror.status:
        return "status_differs", f"status {primary.status or '-'} != {mirror.status}"
    if primary.grpc_status != mirror.grpc_status:
        return "status_differs", f"grpc-status {primary.grpc_status or '-'} != {mirror.grpc_status or '-'}"
    if primary.size >= 0 and mirror.size >= 0 and primary.size != mirror.size:
        return "body_differs", f"size {primary.size} != {mirror.size}"
    if primary.digest and mirror.digest and primary.digest != mirror.digest:
        return "body_differs", f"digest {primary.digest[:12]} != {mirror.digest[:12]}"
    for name in headers:
        if name in SIZE_HEADERS:
            continue
        a, b = primary.headers.get(name), mirror.headers.get(name)
        if a != b:
            return "headers_differ", f"{name} {a or '-'} != {b or '-'}"
    return "same", ""
