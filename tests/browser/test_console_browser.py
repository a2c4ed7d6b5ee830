"""The console in a real headless Chromium against the real stack (broker,
PostgreSQL, the service with a signed webhook and a pipeline into a table): a bad
order is dead-lettered; an operator logs in, filters the dead letters, opens the
record, types a jq patch, sees the preview, replays it (dry run, then for real)
and sees its history, and the order lands in the table.  Then the schema pages.
Each page is saved under build/screenshots/."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page, expect

from eventpipe.connectors.webhook import source as _webhook_source  # noqa: F401  (its routes)
from eventpipe.settings import Settings
from tests.browser.conftest import shot
from tests.helpers import read_records
from tests.integration.console_support import (
    ADMIN_TOKEN,
    demo_settings,
    demo_table,
    post_order,
    register_schemas,
)
from tests.integration.test_pipeline_support import (
    ident,
    running,
    sql,
    wait_rows,
)

pytestmark = pytest.mark.timeout(600)


V1 = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}
V2 = {**V1, "fields": [*V1["fields"], {"name": "total", "type": "double", "default": 0}]}


async def test_dlq_browser_patch_preview_replay_and_schema_pages(
    settings: Settings, browser_page: Page
) -> None:
    page = browser_page
    name = ident("orders")
    url = settings.database.url.get_secret_value()
    await demo_table(settings, name)
    subject = f"{name}-value"
    await register_schemas(settings, subject, V1, V2)
    s = demo_settings(settings, name)
    pipeline = f"{name}-to-postgres"
    async with running(s, "all") as svc:
        base = svc.url
        good = {"id": "o-1", "customer": "c-7", "status": "created", "total": 42.5}
        assert await post_order(base, name, good) == 200
        # a bad order: its total is not a number, so the table refuses it
        bad = {"id": "o-2", "customer": "c-8", "status": "created", "total": "forty-two"}
        assert await post_order(base, name, bad) == 200
        assert await wait_rows(url, f"select count(*) from {name}", 1, timeout=90) == 1
        letters = await read_records(s.kafka.bootstrap, f"{pipeline}.dlq", 1, timeout=90)
        assert len(letters) == 1

        # / leads to the console, which asks for a login first
        await page.goto(base + "/")
        await expect(page).to_have_url(f"{base}/console/login?next=%2Fconsole%2F")
        await page.get_by_label("Your name").fill("ada")
        await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        await shot(page, "console-login")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#who")).to_have_text("ada")
        await shot(page, "console-home")

        # the dead letters, filtered by pipeline and stage
        await page.get_by_role("link", name="Dead letters").first.click()
        await expect(page.locator("h1")).to_have_text("Dead letters")
        await page.locator("select[name=pipeline]").select_option(pipeline)
        await page.locator("select[name=stage]").select_option("sink")
        await page.get_by_role("button", name="Filter").click()
        rows = page.locator("#dead-letters tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("RowRejectedError")
        await expect(rows.first).to_contain_text("forty-two")
        await shot(page, "console-dlq-list")

        # the record: its error and payload; the signature is masked
        await rows.first.locator("a.ref").click()
        await expect(page.locator("#exception-class")).to_contain_text("RowRejectedError")
        await expect(page.locator("#payload")).to_contain_text("forty-two")
        await expect(page.locator("#payload")).to_contain_text('"whsignature": "[masked]"')
        await shot(page, "console-dlq-record")

        # a patch: the preview follows the typing, and nothing is sent
        await page.locator("#patch").fill(".data.total = 42")
        await expect(page.locator("#patched")).to_contain_text('"total": 42')
        await expect(page.locator("#diff .add")).to_contain_text('"total": 42')
        await expect(page.locator("#replay-patch-shown")).to_have_text(".data.total = 42")
        await expect(page.locator("#replay-button")).to_be_enabled()
        await shot(page, "console-dlq-preview")
        # the README's picture (docs/console.png is a copy of one)
        await shot(page, "console-readme", page.locator("section.actions"))
        # a broken patch says why and keeps Replay off
        await page.locator("#patch").fill(".data.total = ")
        await expect(page.locator("#preview-error")).to_contain_text("does not compile")
        await expect(page.locator("#replay-button")).to_be_disabled()
        await page.locator("#patch").fill(".data.total = 42")
        await expect(page.locator("#replay-button")).to_be_enabled()
        assert await sql(url, f"select count(*) from {name}") == [(1,)]

        # dry run, then the replay
        await page.get_by_label("Why").first.fill("total was text; fixed by hand")
        await page.get_by_role("button", name="Dry run").click()
        await expect(page.locator("#dry-run-result")).to_contain_text("nothing was sent")
        await expect(page.locator("#dry-run-result")).to_contain_text('"total": 42')
        await shot(page, "console-dlq-dry-run")
        assert await sql(url, f"select count(*) from {name}") == [(1,)]
        await expect(page.locator("#replay-patch-shown")).to_have_text(".data.total = 42")
        await page.get_by_role("button", name="Replay", exact=True).click()
        await expect(page.locator("#notice")).to_contain_text("Replayed")
        history = page.locator("#history tbody tr")
        await expect(history).to_have_count(1)
        await expect(history.first).to_contain_text("ada")
        await expect(history.first).to_contain_text("total was text; fixed by hand")
        await expect(history.first).to_contain_text(".data.total = 42")
        await shot(page, "console-dlq-replayed")
        assert await wait_rows(url, f"select count(*) from {name}", 2, timeout=90) == 2
        assert await sql(url, f"select total from {name} where id = 'o-2'") == [(42,)]

        # the trace of the bad order's event, from the dead letter's page: it came in
        # through the webhook, the pipeline dead-lettered it at the sink, and its
        # replay went through the pipeline into the table
        await page.locator("#trace-link").click()
        await expect(page.locator("h1")).to_have_text("Trace an event")
        first = page.locator("#record-1")
        await expect(first.locator(".came-in")).to_contain_text(f"webhook {name}")
        await expect(first.locator("table.pipelines")).to_contain_text("dead-lettered")
        replayed = page.locator("section.record", has_text="replay of dead letter")
        for _ in range(30):  # the index is written about once a second
            if await replayed.locator("td.ok", has_text="delivered").count():
                break
            await page.wait_for_timeout(1000)
            await page.reload()
        await expect(replayed.locator("table.pipelines")).to_contain_text(pipeline)
        await expect(replayed.locator("td.ok")).to_have_text("delivered")
        await shot(page, "console-trace")

        # the audit log
        await page.get_by_role("link", name="Activity").click()
        await expect(page.locator("#activity")).to_contain_text("dlq.replay")
        await shot(page, "console-activity")

        # schemas: the subject, a diff of its two versions, a compatibility check
        await page.get_by_role("link", name="Schemas").click()
        await page.get_by_role("link", name=subject).click()
        await expect(page.locator("#schema")).to_contain_text('"total"')
        await shot(page, "console-schema-subject")
        await page.get_by_role("button", name="Diff").click()
        await expect(page.locator("#schema-diff .add", has_text='"total"')).to_have_count(1)
        await shot(page, "console-schema-diff")
        breaking = {
            "type": "record",
            "name": "Order",
            "fields": [{"name": "sku", "type": "string"}],
        }
        await page.locator("#check-form textarea").fill(json.dumps(breaking))
        await page.get_by_role("button", name="Check").click()
        await expect(page.locator("#check-result")).to_contain_text("Not compatible")
        await shot(page, "console-schema-check")
    # nothing but the one replay reached the table
    assert await sql(url, f"select id, total from {name} order by id") == [
        ("o-1", 42.5),
        ("o-2", 42),
    ]
