"""Shadow testing: how each mirror answered compared with the primary (issue 15).

Envoy writes an upstream access log entry for the primary leg and for every mirror leg of a
request; they reach :mod:`.receiver` over gRPC ALS, are paired by ``x-request-id`` in a bounded
window (:mod:`.pairing`), compared (:mod:`.compare`) and reported as Prometheus metrics, through
the ``mirrorplane.shadow.v1.Shadow`` admin service and by ``mirrorplane diff``. Rules that compare
bodies also get each sampled leg's body from Envoy (:mod:`.bodyreport`), digested (:mod:`.bodies`)
and joined to its pair.

The package imports neither providers nor translators: everything it needs to attribute an
entry travels in the entry itself (:mod:`.tagging`), so it also runs alone (``mirrorplane
collect``) for a fleet too large for one control plane process to also count.
"""
