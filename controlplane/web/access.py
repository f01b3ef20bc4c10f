"""Who may see the page.

The page shows config (routes, backends, Envoy's NACK messages, which can quote config) and the
requests mirrors answered (paths, statuses, response headers), and the HTTP port has no
authentication. So it follows the rule of docs/security.md for every port that shows config:
only on this machine unless ``--insecure`` says otherwise. Concretely, a request is served when

* it comes from a loopback peer (always the case while the port binds loopback; with a wider
  bind, an SSH tunnel or ``kubectl port-forward`` still arrives from loopback), and
* its Host header names loopback (``localhost``, ``127.0.0.0/8``, ``[::1]``), so that a web page
  on another site cannot read it through DNS rebinding,

or when the control plane runs with ``--insecure``. Everything else gets a 403 with the reason.
/metrics, /healthz and /readyz are not affected.
"""

from __future__ import annotations

from ..exposure import is_loopback


def _host_name(host_header: str) -> str:
    """The name in a Host header, without its port (IPv6 literals keep no brackets)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refusal(peer: str | None, host_header: str | None, *, open_to_all: bool) -> str | None:
    """Why this request may not see the page, or None."""
    if open_to_all:
        return None
    if not peer or not is_loopback(peer):
        return (
            f"the page shows config and is served only to this machine (request from {peer or 'an unknown peer'}): "
            "reach it through an SSH tunnel or `kubectl port-forward`, or start the control plane with --insecure"
        )
    if not host_header or not is_loopback(_host_name(host_header)):
        return f"Host {host_header!r} is not a loopback name: open the page as http://127.0.0.1:PORT/ or http://localhost:PORT/"
    return None
