"""The page for people (issue 16): every Gateway, Envoy and mirror, and how each mirror's answers
differ, live, on the HTTP port (``/``) beside /metrics. docs/web.md describes it.

Rendered on the server from the control plane's memory (:mod:`.model`, :mod:`.pages`), with one
small script shipped in the package (static/web.js) that fetches the live part again every few
seconds. Only :mod:`controlplane.serve` wires it in; nothing else imports it.
"""
