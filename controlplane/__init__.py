"""mirrorplane: an xDS control plane for Envoy that turns Gateway API HTTPRoutes into Envoy
config, with request mirroring done right."""

import os as _os

# mirrorplane starts Envoy as a child process (fork + exec, no gRPC in the child). gRPC's fork
# support only logs "skipping fork() handlers" for each such start; it must be off before grpc
# is first imported.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
