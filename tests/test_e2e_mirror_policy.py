"""MirrorPolicy end to end: a policy file → control plane → ADS → a real Envoy 1.40 → what the
mirror and the primary each actually receive. Every change is a file edit, with no Envoy restart."""

from __future__ import annotations

import uuid
from typing import Any

from controlplane.providers.files import FileProvider
from e2e import Stack
from support import wait_until

POLICY = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {{name: seed-shadow, namespace: server}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: http-route-sample}}]
{body}"""

EVERY_FIELD = """  requestHeaderModifier:
    set: [{name: x-shadow, value: "100%"}]
    add: [{name: x-shadow-run, value: nightly}]
    remove: [authorization]
  hostname: cart-next.internal
  tracing: {sampling: Never}
"""


async def _mirrored(stack: Stack, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send one GET; return the request heads the primary and the mirror logged for it."""
    uri = f"/policy?id={uuid.uuid4()}"
    status, _ = await stack.request(uri, headers=headers)
    assert status == 200
    primary, mirror = stack.echos["pipy"].log, stack.echos["pipy-mirror"].log
    await wait_until(lambda: mirror.echoed(uri), message="the mirror logging the request")
    return next(h for h in primary.heads() if h["path"] == uri), next(h for h in mirror.heads() if h["path"] == uri)


async def _policy_is(stack: Stack, wanted: dict[str, Any]) -> bool:
    policies = await stack.mirror_policies()
    return bool(policies) and all({k: p.get(k) for k in wanted} == wanted for p in policies)


async def test_policy_shapes_the_mirror_leg_only_and_deleting_it_restores_the_defaults(stack: Stack) -> None:
    pid = stack.envoy.pid
    stack.write("policy.yaml", POLICY.format(body=EVERY_FIELD))
    await wait_until(
        lambda: _policy_is(stack, {"host_rewrite_literal": "cart-next.internal", "trace_sampled": False}),
        message="Envoy holding the policy's mirror settings",
    )
    sent = {"Authorization": "Bearer primary-only", "X-Shadow": "from-client"}
    primary, mirror = await _mirrored(stack, sent)

    # The mirror: the header set (a literal "%", not an Envoy format command), the one added, no
    # credentials, and the Host the policy names.
    assert mirror["headers"]["x-shadow"] == "100%"
    assert mirror["headers"]["x-shadow-run"] == "nightly"
    assert "authorization" not in mirror["headers"]
    assert mirror["headers"]["host"] == "cart-next.internal"
    # The primary: exactly what the client sent.
    assert primary["headers"]["authorization"] == "Bearer primary-only"
    assert primary["headers"]["x-shadow"] == "from-client"
    assert "x-shadow-run" not in primary["headers"]
    assert primary["headers"]["host"] == "127.0.0.1"

    (stack.dir / "policy.yaml").unlink()
    await wait_until(
        lambda: _policy_is(stack, {"host_rewrite_literal": None, "request_headers_mutations": None}),
        message="Envoy dropping the policy's mirror settings",
    )
    primary, mirror = await _mirrored(stack, sent)
    assert mirror["headers"]["authorization"] == "Bearer primary-only"
    assert mirror["headers"]["x-shadow"] == "from-client"
    assert mirror["headers"]["host"] == "127.0.0.1"
    assert stack.envoy.pid == pid, "Envoy must not be restarted"


async def test_keep_shadow_host_suffix_and_the_deprecated_annotation(stack: Stack) -> None:
    stack.write("policy.yaml", POLICY.format(body="  keepShadowHostSuffix: true\n"))
    await wait_until(lambda: _policy_is(stack, {"disable_shadow_host_suffix_append": None}), message="suffix kept")
    _, mirror = await _mirrored(stack, {})
    assert mirror["headers"]["host"] == "127.0.0.1-shadow"

    # The policy wins over the deprecated annotation; without the policy the annotation still works.
    route = (stack.dir / "route.yaml").read_text()
    annotated = route.replace(
        "  namespace: server\n", "  namespace: server\n  annotations: {mirrorplane.io/mirror-shadow-host-suffix: \"true\"}\n", 1
    )
    stack.write("route.yaml", annotated)
    stack.write("policy.yaml", POLICY.format(body="  keepShadowHostSuffix: false\n"))
    await wait_until(lambda: _policy_is(stack, {"disable_shadow_host_suffix_append": True}), message="suffix off")
    _, mirror = await _mirrored(stack, {})
    assert mirror["headers"]["host"] == "127.0.0.1"
    (stack.dir / "policy.yaml").unlink()
    await wait_until(lambda: _policy_is(stack, {"disable_shadow_host_suffix_append": None}), message="annotation again")
    _, mirror = await _mirrored(stack, {})
    assert mirror["headers"]["host"] == "127.0.0.1-shadow"


async def test_an_invalid_policy_file_is_refused_and_the_route_keeps_serving(stack: Stack) -> None:
    """A CEL violation and an unknown field: the file is refused with the API server's wording,
    the route keeps mirroring with its defaults."""
    stack.write("policy.yaml", POLICY.format(body="  hostname: a.example\n  keepShadowHostSuffix: true\n  colour: red\n"))
    await wait_until(lambda: 'unknown field "spec.colour"' in _errors(stack), message="the file refused")
    assert _errors(stack).startswith('The MirrorPolicy "seed-shadow" is invalid: ')
    stack.write("policy.yaml", POLICY.format(body="  hostname: a.example\n  keepShadowHostSuffix: true\n"))
    await wait_until(
        lambda: "spec: Invalid value: \"object\": hostname and keepShadowHostSuffix cannot both be set" in _errors(stack),
        message="the CEL rule's message",
    )
    primary, mirror = await _mirrored(stack, {"Authorization": "Bearer x"})
    assert mirror["headers"]["host"] == "127.0.0.1" and mirror["headers"]["authorization"] == "Bearer x"


def _errors(stack: Stack) -> str:
    provider = stack.plane.provider
    assert isinstance(provider, FileProvider)
    return " | ".join(e.message for errs in provider.errors.values() for e in errs)
