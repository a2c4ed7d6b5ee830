"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python)
for the console's browser tests.  Playwright's own browser download is never
used: `.ci/run` installs the Debian package when it is missing.  Screenshots go
to build/screenshots/, and the session's summary lists them."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("EVENTPIPE_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
# The flags this closed network needs (no background connections, updates or sync);
# Playwright gives each launch a fresh, empty profile directory of its own.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 60_000  # generous: the machine is shared and the tests run beside others
_STARTED = time.time()


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it), or set "
        "EVENTPIPE_TEST_CHROMIUM to a Chromium binary"
    )
    return CHROMIUM


@pytest.fixture
async def browser_page(chromium: Path) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(chromium), headless=True, args=FLAGS, timeout=TIMEOUT_MS
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 860})
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            yield page
            await context.close()
        finally:
            await browser.close()


async def shot(page: object, name: str, element: object | None = None) -> Path:
    """A screenshot of the whole page (or of one element) into
    build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if element is not None:
        await element.screenshot(path=str(path))  # type: ignore[attr-defined]
    else:
        await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    print(f"screenshot: {path}")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SCREENSHOTS.is_dir():
        return
    fresh = sorted(p for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= _STARTED)
    if fresh:
        terminalreporter.write_sep("-", "console screenshots")
        for p in fresh:
            terminalreporter.write_line(str(p))
