"""Bad input never takes down the server, other valid routes, or the last good config."""

from __future__ import annotations

import logging
import uuid

import pytest

from e2e import Stack
from support import wait_until
from test_e2e_mirror import ROUTE_HEAD, rule

OTHER_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: server
spec:
  parentRefs:
  - name: simple-gateway
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: {path}
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: pipy-mirror
          port: 8080{mirror_extra}
    backendRefs:
    - name: {backend}
      port: 8080
"""



async def mirrored(stack: Stack, prefix: str = "/") -> bool:
    """A fresh request is answered by the primary and reaches the mirror."""
    uri = f"{prefix}?probe={uuid.uuid4()}"
    status, _ = await stack.request(uri)
    if status != 200:
        return False
    try:
        await wait_until(lambda: stack.echos["pipy-mirror"].log.echoed(uri), timeout=30)  # an event; generous
    except TimeoutError:
        return False
    return True


async def test_unparsable_file_is_reported_and_the_rest_stays_served(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mirrorplane.files")
    stack.write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x\n")
    await wait_until(lambda: stack.file_errors("broken.yaml"), message="the broken file being reported")
    assert "YAML does not parse" in stack.file_errors("broken.yaml")[0]
    assert any("broken.yaml" in r.getMessage() and "YAML does not parse" in r.getMessage() for r in caplog.records)
    assert await mirrored(stack)


async def test_a_file_that_breaks_keeps_its_last_good_objects_until_fixed(stack: Stack) -> None:
    good = (stack.dir / "route.yaml").read_text()
    stack.write("route.yaml", good + "\n  - this is: [not yaml\n")
    await wait_until(lambda: stack.file_errors("route.yaml"), message="the broken route file being reported")
    assert await mirrored(stack), "the last good route (with its mirror) must keep serving"
    # Now a valid change, to prove the file is live again once fixed.
    stack.write("route.yaml", ROUTE_HEAD + rule("/"))
    await wait_until(lambda: not stack.file_errors("route.yaml"))
    await wait_until(lambda: _no_mirror(stack), message="the fixed file taking effect")


async def _no_mirror(stack: Stack) -> bool:
    return not await stack.mirror_policies()


async def test_cel_violation_rejects_that_route_only(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mirrorplane.files")
    both = "\n        percent: 20\n        fraction:\n          numerator: 1\n          denominator: 2"
    stack.write("bad-route.yaml", OTHER_ROUTE.format(name="bad", path="/bad", mirror_extra=both, backend="pipy"))
    await wait_until(lambda: stack.file_errors("bad-route.yaml"), message="the CEL violation being reported")
    message = stack.file_errors("bad-route.yaml")[0]
    assert "HTTPRoute server/bad" in message
    assert "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter" in message
    assert any("HTTPRoute server/bad" in r.getMessage() and "percent or fraction" in r.getMessage() for r in caplog.records)
    assert ("HTTPRoute", "server", "bad") not in stack.plane.controller.statuses
    assert await mirrored(stack)
    assert await mirrored(stack, "/bad"), "/bad falls through to the seed route, which still mirrors"


async def test_backend_ref_to_missing_service_gets_500_and_the_rest_stays_served(stack: Stack) -> None:
    stack.write("missing.yaml", OTHER_ROUTE.format(name="missing", path="/missing", mirror_extra="", backend="nope"))
    key = ("HTTPRoute", "server", "missing")

    def resolved_refs() -> tuple[str, str, str] | None:
        for parent in (stack.plane.controller.statuses.get(key) or {}).get("parents", []):
            for c in parent["conditions"]:
                if c["type"] == "ResolvedRefs":
                    return c["status"], c["reason"], c["message"]
        return None

    await wait_until(lambda: resolved_refs() is not None, message="status for the new route")
    assert resolved_refs() == ("False", "BackendNotFound", "backendRef: Service server/nope not found")

    async def missing_is_500() -> bool:
        return (await stack.request("/missing"))[0] == 500

    await wait_until(missing_is_500, message="/missing answered with 500")
    assert await mirrored(stack)
