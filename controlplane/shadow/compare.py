"""The verdict on one pair: did the mirror answer like the primary?"""

from __future__ import annotations

from .entries import Leg

BODY_INDEPENDENT = frozenset({"mirror_failed", "status_differs"})
"""Results a body cannot change: such pairs need not wait for their bodies' digests."""
RESULTS = ("same", "status_differs", "body_differs", "headers_differ", "mirror_failed", "unpaired")
SIZE_HEADERS = frozenset({"content-length"})  # compared as the size, not as a header


def compare(primary: Leg, mirror: Leg, headers: tuple[str, ...]) -> tuple[str, str]:
    """(result, detail). The first difference in this order wins: no answer, status, body, headers.

    The body is compared by digest when both legs have one (comparison.body), else by size."""
    if mirror.failure or not mirror.status:
        return "mirror_failed", mirror.failure or "no response"
    if primary.status != mirror.status:
        return "status_differs", f"status {primary.status or '-'} != {mirror.status}"
    if primary.grpc_status != mirror.grpc_status:
        return "status_differs", f"grpc-status {primary.grpc_status or '-'} != {mirror.grpc_status or '-'}"
    if primary.digest and mirror.digest:  # bodies compared (after ignoreJSONPaths): the digests decide
        if primary.digest != mirror.digest:
            sizes = f", size {primary.size} != {mirror.size}" if primary.size != mirror.size else ""
            return "body_differs", f"digest {primary.digest[:12]} != {mirror.digest[:12]}{sizes}"
    elif primary.size >= 0 and mirror.size >= 0 and primary.size != mirror.size:
        return "body_differs", f"size {primary.size} != {mirror.size}"
    for name in headers:
        if name in SIZE_HEADERS:
            continue
        a, b = primary.headers.get(name), mirror.headers.get(name)
        if a != b:
            return "headers_differ", f"{name} {a or '-'} != {b or '-'}"
    return "same", ""
