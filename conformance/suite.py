"""The test registry and the runner: shared setup once, then every test in its own Env.

Like upstream's suite, setup applies the base manifests, creates the TLS Secrets and waits for
the pods; then each test applies its manifests and makes its assertions. Tests run concurrently
(each has its own folder, control planes and Envoys; the echo pods are shared and every mirror
check uses a unique request id), and one line per test is printed as it finishes.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from controlplane.gatewayapi.translator import translate
from controlplane.providers.files import FileProvider

from . import fixture
from .env import Env
from .pods import Pods
from .status import ConformanceError

CORE_FEATURES = frozenset({"Gateway", "HTTPRoute", "ReferenceGrant"})
TEST_TIMEOUT = 150.0


@dataclass(frozen=True)
class ConformanceTest:
    short_name: str
    description: str
    features: tuple[str, ...]
    manifests: tuple[str, ...]
    run: Callable[[Env], Awaitable[None]] | None
    provisional: bool = False
    skip_reason: str = ""  # set: reported as skipped, never run

    @property
    def extended_features(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f not in CORE_FEATURES)

    @property
    def core(self) -> bool:
        return not self.extended_features


TESTS: list[ConformanceTest] = []


def conformance_test(
    short_name: str, description: str, features: list[str], manifests: list[str], *, provisional: bool = False
) -> Callable[[Callable[[Env], Awaitable[None]]], Callable[[Env], Awaitable[None]]]:
    def register(fn: Callable[[Env], Awaitable[None]]) -> Callable[[Env], Awaitable[None]]:
        TESTS.append(ConformanceTest(short_name, description, tuple(features), tuple(manifests), fn, provisional))
        return fn

    return register


def skipped_test(short_name: str, features: list[str], reason: str) -> None:
    """An upstream test we do not run, kept in the report with why."""
    TESTS.append(ConformanceTest(short_name, "", tuple(features), (), None, skip_reason=reason))


@dataclass
class Result:
    test: ConformanceTest
    outcome: str  # "Passed" | "Failed" | "Skipped"
    seconds: float = 0.0
    reason: str = ""


@dataclass
class RunResult:
    results: list[Result]
    seconds: float
    not_run_deployments: dict[str, str] = field(default_factory=dict)
    claimed_features: list[str] = field(default_factory=list)  # the GatewayClass's status.supportedFeatures
    complete: bool = True  # every registered test was asked for (features can only be judged then)


def all_tests() -> list[ConformanceTest]:
    from . import tests_core, tests_extended, tests_grpc, tests_mirror  # noqa: F401 - registers the tests

    return sorted(TESTS, key=lambda t: t.short_name)


async def run(
    names: list[str] | None = None, *, concurrency: int = 4, out: TextIO = sys.stdout, keep: bool = False
) -> RunResult:
    started = time.monotonic()
    tests = [t for t in all_tests() if not names or t.short_name in names]
    unknown = set(names or []) - {t.short_name for t in tests}
    if unknown:
        raise SystemExit(f"unknown test(s): {', '.join(sorted(unknown))}")
    root = Path(tempfile.mkdtemp(prefix="mirrorplane-conformance-"))
    pods = Pods()
    try:
        base_docs = fixture.load(fixture.BASE_MANIFESTS)
        services = {}
        for doc in base_docs:
            if doc.get("kind") == "Service" and doc["spec"].get("selector", {}).get("app"):
                services[(doc["metadata"]["namespace"], doc["spec"]["selector"]["app"])] = doc["metadata"]["name"]
        certs = {(ns, name): fixture.self_signed(hosts) for ns, name, hosts in fixture.RUNTIME_SECRETS}
        for attempt in range(3):  # another run may hold the same random subnet: take another
            deployments = fixture.echo_pods(base_docs, (random.randint(1, 254), random.randint(0, 254)))
            try:
                await pods.start(deployments.pods, services)
                break
            except OSError:
                await pods.stop()
                pods = Pods()
                if attempt == 2:
                    raise
        runtime = [fixture.gateway_class()]
        runtime += [fixture.tls_secret(ns, name, cert) for (ns, name), cert in certs.items()]
        runtime += fixture.endpoint_slices(base_docs, deployments.pods, {p.spec.name for p in pods.pods})
        base = fixture.render(fixture.BASE_MANIFESTS.read_text()) + "\n---\n" + fixture.dump(runtime)
        claimed = _claimed_features(root / "gatewayclass", base)
        print(
            f"setup: {len(pods.pods)} echo pods, {len(certs)} TLS Secrets, {time.monotonic() - started:.1f}s",
            file=out,
            flush=True,
        )
        semaphore = asyncio.Semaphore(concurrency)

        async def one(test: ConformanceTest) -> Result:
            if test.skip_reason:
                result = Result(test, "Skipped", reason=test.skip_reason)
            else:
                async with semaphore:
                    result = await _run_one(test, root / test.short_name, pods, certs, base)
            print(f"{test.short_name:<55} {result.outcome:<7} {result.seconds:6.1f}s{_short(result.reason)}", file=out, flush=True)
            return result

        results = await asyncio.gather(*(one(t) for t in tests))
        return RunResult(list(results), time.monotonic() - started, deployments.not_run, claimed, not names)
    finally:
        await pods.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _claimed_features(folder: Path, base: str) -> list[str]:
    """What the GatewayClass's status claims, read through the file provider and translator."""
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text(base)
    status = translate(FileProvider(folder).load()).statuses.get(("GatewayClass", "", fixture.GATEWAY_CLASS)) or {}
    return [f["name"] for f in status.get("supportedFeatures") or []]


async def _run_one(
    test: ConformanceTest, folder: Path, pods: Pods, certs: dict[tuple[str, str], fixture.Certificate], base: str
) -> Result:
    assert test.run is not None
    t0 = time.monotonic()
    env = Env(folder, pods, certs, base)
    try:
        await env.start(list(test.manifests))
        await asyncio.wait_for(test.run(env), TEST_TIMEOUT)
        return Result(test, "Passed", time.monotonic() - t0)
    except ConformanceError as exc:
        return Result(test, "Failed", time.monotonic() - t0, str(exc))
    except TimeoutError:
        return Result(test, "Failed", time.monotonic() - t0, f"timed out after {TEST_TIMEOUT:g}s")
    except Exception as exc:  # noqa: BLE001 - a harness error fails this test only, loudly
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return Result(test, "Failed", time.monotonic() - t0, f"error: {detail}")
    finally:
        await env.stop()


def _short(reason: str) -> str:
    if not reason:
        return ""
    one_line = " ".join(reason.split())
    return "  " + (one_line[:160] + "…" if len(one_line) > 160 else one_line)
