"""The console's overview and pipeline page in a real headless Chromium against the
real stack (the README's demo: a signed webhook -> topic -> pipeline -> table):
the components and their states, counters that move while the page is open (no
reload) after an order is sent, the sinks with their circuit, the lag by
partition, the steps and the charts.  Screenshots go to build/screenshots/."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from eventpipe.settings import Settings
from tests.browser.conftest import shot
from tests.integration.console_support import ADMIN_TOKEN, demo_settings, demo_table, post_order
from tests.integration.test_pipeline_support import ident, running, wait_rows

pytestmark = pytest.mark.timeout(600)


async def test_overview_and_pipeline_page_follow_the_service_live(
    settings: Settings, browser_page: Page
) -> None:
    page = browser_page
    name = ident("orders")
    url = settings.database.url.get_secret_value()
    await demo_table(settings, name)
    s = demo_settings(settings, name)
    pipeline = f"{name}-to-postgres"
    async with running(s, "all") as svc:
        base = svc.url
        await page.goto(base + "/console/")
        await page.get_by_label("Your name").fill("ada")
        await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        await page.get_by_role("button", name="Log in").click()

        # the overview: the webhook source and the pipeline (with its sink), live
        await expect(page.locator("h1")).to_have_text("Overview")
        source = page.locator(f'tbody[data-check="source:{name}"]')
        row = page.locator(f'tbody[data-check="pipeline:{pipeline}"]')
        await expect(source.locator('[data-field="state"]')).to_have_text("running")
        # the pipeline waits for its partitions a moment; the page follows it
        await expect(row.locator('[data-field="state"]').first).to_have_text("running")
        await expect(row.locator("tr.child")).to_contain_text(f"{pipeline}/postgres")
        await expect(page.locator("#summary")).to_contain_text("All 2 components work")
        assert (
            await post_order(
                base, name, {"id": "o-1", "customer": "c-1", "status": "created", "total": 5}
            )
            == 200
        )
        # no reload: the counters move
        await expect(source.locator('[data-field="rate_out"]')).not_to_have_text("0.00")
        await expect(row.locator('[data-field="rate_in"]').first).not_to_have_text("0.00")
        await expect(row.locator('polyline[data-spark="rate_in"]')).to_have_attribute(
            "points", re.compile(r"\d")
        )
        await shot(page, "console-overview")

        # the pipeline page
        await row.get_by_role("link", name=pipeline).click()
        await expect(page.locator("h1")).to_contain_text(f"Pipeline {pipeline}")
        await expect(page.locator('[data-field="total_in"]')).to_have_text("1")
        await expect(page.locator("#sinks")).to_contain_text("postgres")
        await expect(page.locator('#sinks [data-field="circuit"]')).to_have_text("closed")
        await expect(page.locator("#steps")).to_contain_text(
            "jq: '{id: .id, customer: .customer, total: .total}'"
        )
        await expect(page.locator("#lag tbody tr").first).to_contain_text(f"{name}.orders[0]")
        # two more orders while the page is open: the counters follow
        for i in (2, 3):
            order = {"id": f"o-{i}", "customer": "c-2", "status": "created", "total": i}
            assert await post_order(base, name, order) == 200
        await expect(page.locator('[data-field="total_in"]')).to_have_text("3")
        await expect(page.locator('#sinks [data-field="total_out"]')).to_have_text("3")
        await shot(page, "console-pipeline")
        assert await wait_rows(url, f"select count(*) from {name}", 3, timeout=60) == 3
