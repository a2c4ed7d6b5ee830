"""The console under ``eventpipe run --workers 2`` in a real headless Chromium: the
overview has a row per worker for each component, and the live updates (no
reload) reach each worker's row and each worker's section of a pipeline page."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import shot
from tests.integration.console_support import ADMIN_TOKEN
from tests.integration.test_console_workers import tree
from tests.integration.test_run_workers import Tree

pytestmark = pytest.mark.timeout(600)
__all__ = ["tree"]  # the fixture: two workers, a webhook and a 4-partition pipeline


async def test_each_workers_rows_follow_that_worker_live(tree: Tree, browser_page: Page) -> None:
    page = browser_page
    base = f"http://127.0.0.1:{tree.port}"
    await page.goto(base + "/console/")
    await page.get_by_label("Your name").fill("ada")
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("h1")).to_have_text("Overview")
    check = f"pipeline:{tree.source}"
    rows = [page.locator(f'tbody[data-check="{check}"][data-worker="{w}"]') for w in (0, 1)]
    for w, row in enumerate(rows):
        await expect(row).to_contain_text(f"worker {w}")
        await expect(row.locator('[data-field="state"]').first).to_have_text("running")
    await expect(page.locator("#summary")).to_contain_text("(2 workers)")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        answers = await asyncio.gather(*(tree.post(http, f"b{i}") for i in range(60)))
    assert answers == [200] * 60, answers
    for row in rows:  # each worker holds partitions of the topic: both rows move
        await expect(row.locator('[data-field="rate_in"]').first).not_to_have_text("0.00")
    await shot(page, "console-overview-workers")

    await rows[0].get_by_role("link", name=tree.source).click()
    await expect(page.locator("h1")).to_have_text(f"Pipeline {tree.source}")
    sections = [page.locator(f'div[data-check="{check}"][data-worker="{w}"]') for w in (0, 1)]
    for w, section in enumerate(sections):
        await expect(section.locator("h2.worker")).to_contain_text(f"Worker {w}")
        await expect(section.locator('[data-field="total_in"]')).not_to_have_text("0")
    before = [await s.locator('[data-field="total_in"]').inner_text() for s in sections]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        answers = await asyncio.gather(*(tree.post(http, f"c{i}") for i in range(60)))
    assert answers == [200] * 60, answers
    for section, was in zip(sections, before, strict=True):  # no reload: both follow
        await expect(section.locator('[data-field="total_in"]')).not_to_have_text(was)
    await shot(page, "console-pipeline-workers")
