"""The page for people (issue 16, docs/web.md) in a real headless Chromium, against the seed
scenario served to a real Envoy whose mirror answers 500 on /v2-only.

Screenshots of every page are written under the test's tmp dir (the path is printed; run with
``-s`` to see it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from benchmarks import workload
from browser import Browser
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from e2e import Stack, start_stack
from support import free_port, wait_until

GATEWAY = "server/simple-gateway"
ROUTE = "HTTPRoute server/http-route-sample"
MIRROR = "mirror/server/pipy-mirror/8080"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-screenshots")
    print(f"\nscreenshots of the page go to {path}")
    return path


@pytest.fixture(scope="module")
def browser(shots: Path) -> Iterator[Browser]:
    b = Browser(shots)
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture
async def seed(tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    """The seed scenario with the page on: pipy-mirror answers 500 on /v2-only (as `make run`)."""
    port = free_port()
    stack = await start_stack(
        tmp_path, mirror_options={"path_status": {"/v2-only": 500}}, plane_options={"http_port": port}
    )
    try:
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        await stack.exits.aclose()


async def test_overview_then_differing_pairs_live_then_both_legs(seed: tuple[Stack, str], browser: Browser) -> None:
    stack, page = seed
    await browser.get(page + "/")
    assert "mirrorplane" in await browser.call(lambda: browser.driver.title)

    gateways = await browser.wait_for("the seed Gateway", lambda: _has(browser, "#gateways", GATEWAY))
    assert "http HTTP :8000" in gateways and ROUTE in gateways  # its listener and attached route
    envoy = await browser.wait_for("the Envoy ACKed", lambda: _has(browser, "#envoys tr[data-node='e2e']", "ACKed"))
    assert GATEWAY in envoy and "listeners sent" in envoy and "NACKed" not in envoy
    rules = await browser.text("#rules")
    assert f"{ROUTE} · rule 0" in rules and MIRROR in rules and "100%" in rules
    await browser.screenshot("overview")

    await browser.script("document.querySelector('#rules a.rule').click()")
    await browser.wait_for("the rule's page", lambda: _has(browser, "#rule", f"{ROUTE} · rule 0"))
    # A mark in this document: it would be gone if the page reloaded.
    await browser.script("window.notReloaded = true")

    for i in range(3):
        status, _ = await stack.request("/v2-only")  # the client's answer is the primary's
        assert status == 200
        assert (await stack.request(f"/same/{i}", data=b"same body"))[0] == 200

    pairs = await browser.wait_for("the differing pairs", lambda: _count_pairs(browser, 3))
    assert pairs >= 3
    assert await browser.script("return window.notReloaded === true"), "the page reloaded"
    summary = await browser.script(V2_ONLY + "return v2only()[0].innerText")
    assert "status_differs" in summary and "200 → 500" in summary

    # Open one pair: both legs side by side.
    await browser.script(V2_ONLY + "v2only()[0].click()")
    legs = await browser.text("#pairs details.pair[open] table.legs")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in legs.splitlines() if "\t" in line}
    assert rows["status"] == ["200", "500"], legs
    assert rows["method, path"] == ["GET /v2-only", "GET /v2-only"]
    assert rows["backend"] == ["server/pipy/8080", MIRROR]
    opened = await browser.script("return document.querySelector('#pairs details.pair[open]').dataset.key")

    # The chart fills in at the history's next interval, still without a reload; the pair that
    # was opened stays open across the updates.
    await browser.wait_for(
        "the chart's bars", lambda: browser.script("return document.querySelectorAll('svg.chart rect.r-status').length")
    )
    assert await browser.script("return document.querySelector(`details[data-key='${arguments[0]}']`).open", opened)
    assert await browser.script("return window.notReloaded === true")
    await browser.screenshot("rule")


V2_ONLY = (
    "const v2only = () => [...document.querySelectorAll('#pairs details.pair summary')]"
    ".filter(s => s.innerText.includes('GET /v2-only'));"
)


async def _has(browser: Browser, css: str, text: str) -> str:
    got = await browser.text(css)
    return got if text in got else ""


async def _count_pairs(browser: Browser, n: int) -> int:
    found = await browser.script(V2_ONLY + "return v2only().length")
    return found if found >= n else 0


async def test_a_thousand_rules_and_a_hundred_envoys_filter_and_page(tmp_path: Path, browser: Browser) -> None:
    """1,000 mirrored route rules (benchmarks/workload.py) and 100 ADS streams (simulated Envoys,
    real gRPC): the overview pages them, and the filter box narrows them without a reload."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "all.yaml").write_text(yaml.safe_dump_all(workload.objects(1000)))
    xds_port, http_port = free_port(), free_port()
    async with ControlPlane(FileProvider(folder), xds_port=xds_port, http_port=http_port) as plane:
        fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.simfleet", "--port", str(xds_port), "--clients", "100",
            "--gateway", "bench/gw", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_until(lambda: len(plane.registry) == 100, timeout=60, message="100 ADS streams")
            await browser.get(f"http://127.0.0.1:{http_port}/")
            await browser.wait_for("100 Envoys", lambda: _has(browser, "#envoys h2", "Envoys 100"))
            assert "Mirrored route rules 1000" in await browser.text("#rules h2")
            assert "page 1 of 20" in await browser.text("#rules .pager")
            assert await browser.script("return document.querySelectorAll('#rules tbody tr').length") == 50
            assert await browser.script("return document.querySelectorAll('#envoys tbody tr').length") == 25
            await browser.script("window.notReloaded = true")

            await browser.call(browser.driver.find_element("css selector", "form.filter input").send_keys, "route-421 ")
            await browser.wait_for("the filtered rule", lambda: _has(browser, "#rules h2", "1 of 1000 match"))
            assert "HTTPRoute bench/route-421 · rule 0" in await browser.text("#rules")
            assert "HTTPRoute bench/route-421" in await browser.text("#gateways")  # among its 1000 attached routes
            assert "q=route-421" in await browser.call(lambda: browser.driver.current_url)
            assert await browser.script("return window.notReloaded === true")
            await browser.screenshot("overview-filtered")
        finally:
            assert fleet.stdin is not None
            fleet.stdin.close()
            await fleet.wait()
