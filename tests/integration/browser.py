"""Headless Chromium for the web UI tests: Debian's browser, driven by Playwright.

The tests never download a browser (no ``playwright install``): they use the system Chromium,
which ``scripts/install-browser`` installs. When it is missing the test fails and says so; it
never skips.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000
# Playwright's assertions wait 5 s by default; a busy 2-core machine serving a 10,000-instance
# run can take longer to answer one page, so every assertion in these tests waits up to 15 s.
EXPECT_TIMEOUT_MS = 15_000


def require_chromium() -> Path:
    """The Chromium executable; fails the calling test with what to do when it is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the web UI tests need Debian's Chromium at {CHROMIUM}, which is missing; "
            "run scripts/install-browser to install it (the tests never download a browser)",
            pytrace=False,
        )
    return CHROMIUM


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on exit."""
    executable = require_chromium()
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(executable),
            args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            await browser.close()
