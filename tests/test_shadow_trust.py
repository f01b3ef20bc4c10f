"""Shadow testing over mutual TLS: an access log stream counts for its certificate's Gateway only,
and the comparisons (request paths, statuses) are shown to the operator identity only."""

from __future__ import annotations

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc

from controlplane.shadow.v1 import shadow_pb2, shadow_pb2_grpc
from test_shadow import one_pair_stream
from test_trust import HTTP_GATEWAY, HTTPS_GATEWAY, Plane, mtls_fixture  # noqa: F401 - pytest finds the fixture here


async def test_an_access_log_stream_counts_for_its_certificates_gateway_only(mtls: Plane) -> None:
    async with mtls.channel(HTTPS_GATEWAY) as channel:
        await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(one_pair_stream(HTTPS_GATEWAY), timeout=10)
    for role in (HTTP_GATEWAY, "operator"):
        async with mtls.channel(role) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(
                    one_pair_stream(HTTPS_GATEWAY), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
    assert [k[0] for k in mtls.plane.comparisons.rules] == [HTTPS_GATEWAY]
    assert mtls.plane.comparisons.entries["received"] == 2

    async with mtls.channel(HTTPS_GATEWAY) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await shadow_pb2_grpc.ShadowStub(channel).GetComparisons(shadow_pb2.GetComparisonsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with mtls.channel("operator") as channel:
        got = await shadow_pb2_grpc.ShadowStub(channel).GetComparisons(shadow_pb2.GetComparisonsRequest(), timeout=10)
    assert [(r.gateway, dict(r.results)) for r in got.rules] == [(HTTPS_GATEWAY, {"status_differs": 1})]


async def test_a_body_report_counts_for_its_certificates_gateway_only(mtls: Plane) -> None:
    """Envoy's Lua filter calls Bodies/Report with its Gateway's certificate (the ALS cluster's):
    no other Gateway, nor the operator, can give a Gateway's pairs their bodies."""
    settings = "[[65536,[]]]"
    report = shadow_pb2.BodyReport(gateway=HTTPS_GATEWAY, request_id="a", cluster="p", body=b"x", settings=settings)
    async with mtls.channel(HTTPS_GATEWAY) as channel:
        await shadow_pb2_grpc.BodiesStub(channel).Report(report, timeout=10)
    for role in (HTTP_GATEWAY, "operator"):
        async with mtls.channel(role) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await shadow_pb2_grpc.BodiesStub(channel).Report(report, timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
    assert mtls.plane.comparisons.entries["body_received"] == 1
    assert mtls.plane.comparisons.entries["body_denied"] == 2
