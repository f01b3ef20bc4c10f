"""A real browser for the page's tests: Debian's headless Chromium driven by Selenium through
Debian's chromium-driver. Installed with apt-get when missing (as root, as CI runs); a test is
skipped, with apt's own words, only where that cannot be done.

Selenium's calls block, and the control plane under test runs on the test's event loop: every
call goes through :func:`asyncio.to_thread`, so the page can be served while the browser waits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
PACKAGES = ("chromium", "chromium-driver")


def _found() -> tuple[str, str] | None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing Debian's packages when missing."""
    found = _found()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("Chromium and chromium-driver are missing and this system has no apt-get to install them")
    if os.geteuid() != 0:
        pytest.skip("Chromium and chromium-driver are missing; installing them with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *lock, *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            pytest.skip(f"`{' '.join(cmd)}` failed ({done.returncode}): {' '.join(last)}")
    found = _found()
    if not found:
        pytest.skip(f"apt-get installed {', '.join(PACKAGES)} but chromium/chromedriver are not on PATH")
    return found


class Browser:
    """One headless Chromium window; async wrappers around the Selenium calls the tests use."""

    def __init__(self, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = ensure_chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ):
            options.add_argument(arg)
        # The driver path is given, so Selenium Manager never looks for (or downloads) one.
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def script(self, js: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, js, *args)

    async def text(self, css: str = "body") -> str:
        return await self.script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css)

    async def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        """Poll ``predicate`` (an async callable) until it returns something true."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            got = await predicate()
            if got:
                return got
            if asyncio.get_running_loop().time() > deadline:
                await self.screenshot("timeout")
                raise TimeoutError(f"{what} not shown within {timeout:g}s; page text: {(await self.text())[:2000]!r}")
            await asyncio.sleep(0.2)

    async def screenshot(self, name: str) -> Path:
        """A full-height PNG of the page, kept as a test artifact."""
        for _ in range(2):  # the height after the resize's reflow
            height = await self.script("return document.documentElement.scrollHeight")
            await self.call(self.driver.set_window_size, 1400, max(1000, min(int(height) + 140, 6000)))
        path = self.shots / f"{name}.png"
        await self.call(self.driver.save_screenshot, str(path))
        print(f"screenshot: {path}")
        return path

    def quit(self) -> None:
        self.driver.quit()
