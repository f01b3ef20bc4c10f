"""Gateway API v1.6.1 conformance for mirrorplane, run locally against real Envoys.

Upstream's runner is Go and needs a Kubernetes cluster. This package replays the same upstream
YAML (``conformance/upstream/``, never edited) through the file provider, the code path users
run, and turns the fixture into local reality: each echo Deployment becomes ``mirrorplane echo``
processes on their own loopback "pod IPs", each Service gets the EndpointSlice Kubernetes would
write, each Gateway gets a real Envoy, and the TLS Secrets upstream creates at run time are
generated. The assertions are upstream's (three consecutive matching answers, status conditions
with observedGeneration, mirror log lines, ...). ``python -m conformance`` runs it and writes a
ConformanceReport.
"""
