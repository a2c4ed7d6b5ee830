"""The console's dead-letter browser over HTTP, against the real broker and
PostgreSQL: pages, filters, the patch preview (which sends nothing), replay with
dry run, discard, the ledger with who and why, and secrets never shown."""

from __future__ import annotations

import psycopg
import pytest

from eventpipe.envelope.kafka import from_kafka
from eventpipe.settings import Settings
from tests.helpers import read_records
from tests.integration.console_support import (
    ADMIN_TOKEN,
    HTML,
    JSON,
    console_client,
    console_settings,
    login,
    page_csrf,
)
from tests.integration.dlq_support import Letters, two_pipelines, write_letters


class TransformError(Exception):
    pass


SIGNATURE = "sha256=5f0c1a8e2b7d49e3a1c6f0b9d8e7a6c5b4a39281"
DB_PASSWORD = "pgpass-91d3e7"


@pytest.fixture
async def letters(settings: Settings, topic: str) -> Letters:
    """Six dead letters from two pipelines; ev-2 carries signatures and secrets."""
    return await write_letters(
        settings,
        topic,
        two_pipelines(
            topic,
            TransformError(
                f"failed with token {ADMIN_TOKEN} on "
                f"postgresql://app:{DB_PASSWORD}@db.internal:5432/shop"
            ),
            headers=[
                ("x-signature", SIGNATURE.encode()),
                ("http.webhook-signature", b"v1,c2lnbmF0dXJlLXZhbHVlLTAxMjM0NQ=="),
                ("stripe-signature", b"t=1700000000,v1=abcdef0123456789abcdef"),
                ("http.authorization", b"Bearer live-bearer-0d9c8b7a"),
                ("x-request-id", b"req-visible-42"),
            ],
            whsignature=SIGNATURE,
        ),
    )


def _refs_in(html: str, letters: Letters) -> set[str]:
    return {ev for ev, ref in letters.refs.items() if f'href="/console/dlq/{ref}"' in html}


async def _ledger(settings: Settings, table: str, dlq_topic: str) -> list[tuple[object, ...]]:
    cols = {
        "dlq_replays": "event_id, who, reason, patch, forced, target_topic",
        "dlq_discards": "event_id, who, reason",
    }[table]
    async with await psycopg.AsyncConnection.connect(
        settings.database.url.get_secret_value()
    ) as conn:
        cur = await conn.execute(
            f"select {cols} from eventpipe.{table} where dlq_topic = %s order by 1",
            (dlq_topic,),
        )
        return list(await cur.fetchall())


async def test_root_and_bare_console_lead_to_the_console(settings: Settings) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:
        for path in ("/", "/console"):
            r = await client.get(path, allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == "/console/"
        r = await client.get("/console/", headers=HTML)
        assert r.status == 200
        body = await r.text()
        for section in ("Dead letters", "Schemas", "Activity"):
            assert section in body
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        css = await client.get("/console/static/console.css")
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    async with console_client(console_settings(settings, enabled=False)) as client:
        assert (await client.get("/", allow_redirects=False)).status == 404
        assert (await client.get("/console/dlq")).status == 404


async def test_list_filters_by_pipeline_stage_error_and_time(
    settings: Settings, letters: Letters
) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:

        async def shown(**params: str) -> set[str]:
            r = await client.get(
                "/console/dlq", params={"topic": letters.dlq_topic, **params}, headers=HTML
            )
            assert r.status == 200, await r.text()
            return _refs_in(await r.text(), letters)

        assert await shown() == {f"ev-{i}" for i in range(6)}
        assert await shown(pipeline="payments") == {"ev-3", "ev-4"}
        assert await shown(stage="validate") == {"ev-0", "ev-1"}
        assert await shown(exception="InvalidEventError") == {"ev-0", "ev-1"}
        assert await shown(exception="builtins.ValueError", stage="sink") == {"ev-3", "ev-4"}
        assert await shown(since="1d") == {f"ev-{i}" for i in range(1, 6)}
        assert await shown(until="2d") == {"ev-0"}
        assert len(await shown(shown="2")) == 2
        # the counts cover every match, however few are shown
        r = await client.get(
            "/console/dlq", params={"topic": letters.dlq_topic, "shown": "2"}, headers=HTML
        )
        assert '<strong id="total">6</strong>' in await r.text()

        for params, field in (
            ({"since": "yesterday-ish"}, "since"),
            ({"stage": "nowhere"}, "stage"),
            ({"shown": "0"}, "shown"),
            ({"since": "1h", "until": "2h"}, "until"),
            ({"topic": "no-such-topic.dlq"}, "topic"),
        ):
            r = await client.get("/console/dlq", params=params, headers=HTML)
            body = await r.text()
            assert r.status == 400, (params, r.status)
            assert 'id="filter-problem"' in body and f"{field}:" in body
            assert 'aria-invalid="true"' in body or field == "shown"


async def test_record_page_shows_payload_headers_error_and_masks_secrets(
    settings: Settings, letters: Letters
) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:
        r = await client.get(f"/console/dlq/{letters.refs['ev-2']}", headers=HTML)
        assert r.status == 200
        body = await r.text()
        assert 'id="exception-class">tests.integration.test_console_dlq.TransformError' in body
        assert '<pre class="trace">' in body  # the stack trace
        assert "&#34;n&#34;: 2" in body or '"n": 2' in body  # the payload
        assert "req-visible-42" in body  # an ordinary header is shown
        assert "[masked]" in body
        for secret in (
            SIGNATURE,
            "c2lnbmF0dXJlLXZhbHVlLTAxMjM0NQ",
            "abcdef0123456789abcdef",
            "live-bearer-0d9c8b7a",
            ADMIN_TOKEN,
            DB_PASSWORD,
        ):
            assert secret not in body, secret
        # the preview and its JSON cannot show them either, even when a patch copies one
        for path in (
            f"/console/dlq/{letters.refs['ev-2']}?patch=.data.sig+%3D+.whsignature",
            f"/console/api/dlq/{letters.refs['ev-2']}/preview?patch=.data.sig+%3D+.whsignature",
        ):
            r = await client.get(path, headers=HTML if "api" not in path else JSON)
            assert r.status == 200
            text = await r.text()
            assert SIGNATURE not in text and "[masked]" in text


async def test_preview_applies_the_patch_and_sends_nothing(
    settings: Settings, letters: Letters
) -> None:
    ref = letters.refs["ev-1"]
    async with console_client(console_settings(settings, public_read=True)) as client:
        r = await client.get(
            f"/console/api/dlq/{ref}/preview", params={"patch": ".data.ok = true"}, headers=JSON
        )
        assert r.status == 200
        doc = await r.json()
        assert doc["event"]["data"] == {"n": 1, "ok": True} and doc["event"]["id"] == "ev-1"
        assert '+    "ok": true' in doc["diff"] and '-    "ok": false' in doc["diff"]
        # without JavaScript: the page itself, with ?patch=
        r = await client.get(f"/console/dlq/{ref}", params={"patch": ".data.ok = true"})
        body = await r.text()
        assert r.status == 200 and "&#34;ok&#34;: true" in body
        assert 'value=".data.ok = true"' in body  # the replay form sends the previewed patch

        for patch, words in (
            (".[", "does not compile"),
            ('.id = "other"', "keep the event's id"),
            ("empty", "must output the event object"),
            ("del(.type)", "not valid"),
        ):
            r = await client.get(
                f"/console/api/dlq/{ref}/preview", params={"patch": patch}, headers=JSON
            )
            assert r.status == 400, patch
            assert r.headers["Content-Type"].startswith("application/problem+json")
            problem = await r.json()
            assert problem["errors"][0]["field"] == "patch" and words in problem["detail"]
            page = await client.get(f"/console/dlq/{ref}", params={"patch": patch}, headers=HTML)
            text = await page.text()
            assert page.status == 400 and words in text.replace("&#39;", "'")
            assert 'id="replay-button" disabled' in text  # nothing can be sent with it
    assert await read_records(settings.kafka.bootstrap, letters.origin, 0, timeout=1.5) == []
    assert await _ledger(settings, "dlq_replays", letters.dlq_topic) == []


async def test_replay_dry_run_then_real_through_the_ledger(
    settings: Settings, letters: Letters
) -> None:
    ref = letters.refs["ev-1"]
    async with console_client(console_settings(settings)) as client:
        r = await login(client, who="grace")
        assert r.status == 303 and r.headers["Location"] == "/console/dlq"
        csrf = await page_csrf(client, f"/console/dlq/{ref}")
        form = {"csrf": csrf, "patch": ".data.ok = true", "to": "", "reason": ""}

        r = await client.post(f"/console/dlq/{ref}/replay", data={**form, "mode": "dry-run"})
        body = await r.text()
        assert r.status == 200 and 'id="dry-run-result"' in body
        assert f"Would write event <code>ev-1</code> to <code>{letters.origin}</code>" in body
        assert await read_records(settings.kafka.bootstrap, letters.origin, 0, timeout=1.5) == []

        r = await client.post(
            f"/console/dlq/{ref}/replay", data={**form, "mode": "replay"}, allow_redirects=False
        )
        assert r.status == 400 and "say why you replay it" in await r.text()
        assert await _ledger(settings, "dlq_replays", letters.dlq_topic) == []

        form["reason"] = "total fixed by hand"
        r = await client.post(
            f"/console/dlq/{ref}/replay", data={**form, "mode": "replay"}, allow_redirects=False
        )
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == f"/console/dlq/{ref}?done=replayed"
        [rec] = await read_records(settings.kafka.bootstrap, letters.origin, 1)
        ev = from_kafka(rec.key, rec.value, list(rec.headers))
        assert ev.id == "ev-1" and ev.data == {"n": 1, "ok": True}
        assert await _ledger(settings, "dlq_replays", letters.dlq_topic) == [
            ("ev-1", "grace", "total fixed by hand", ".data.ok = true", False, letters.origin)
        ]
        page = await (await client.get(r.headers["Location"], headers=HTML)).text()
        assert 'id="notice"' in page and 'id="history"' in page
        assert "grace" in page and "total fixed by hand" in page
        assert '<span class="tag replayed" id="state">replayed</span>' in page

        # once only, unless forced
        r = await client.post(
            f"/console/dlq/{ref}/replay", data={**form, "mode": "replay"}, allow_redirects=False
        )
        assert r.status == 409 and "already replayed" in await r.text()
        r = await client.post(
            f"/console/dlq/{ref}/replay",
            data={**form, "mode": "replay", "force": "1"},
            allow_redirects=False,
        )
        assert r.status == 303
        assert len(await _ledger(settings, "dlq_replays", letters.dlq_topic)) == 2
        assert len(await read_records(settings.kafka.bootstrap, letters.origin, 2)) == 2

        # a bad target topic is refused before anything is sent
        r = await client.post(
            f"/console/dlq/{ref}/replay",
            data={**form, "mode": "replay", "force": "1", "to": "no-such-topic"},
        )
        assert r.status == 400 and "no such topic" in await r.text()
        assert len(await _ledger(settings, "dlq_replays", letters.dlq_topic)) == 2

        activity = await (await client.get("/console/activity", headers=HTML)).text()
        assert activity.count("dlq.replay") == 3 and "login" in activity
        assert "skipped: replayed before" in activity and "total fixed by hand" in activity


async def test_discard_needs_a_reason_and_is_recorded(settings: Settings, letters: Letters) -> None:
    ref = letters.refs["ev-5"]
    async with console_client(console_settings(settings)) as client:
        await login(client, who="linus")
        csrf = await page_csrf(client, f"/console/dlq/{ref}")
        r = await client.post(f"/console/dlq/{ref}/discard", data={"csrf": csrf, "reason": " "})
        assert r.status == 400 and "say why you discard it" in await r.text()
        assert await _ledger(settings, "dlq_discards", letters.dlq_topic) == []
        r = await client.post(
            f"/console/dlq/{ref}/discard",
            data={"csrf": csrf, "reason": "known bad: decoder bug 12"},
            allow_redirects=False,
        )
        assert r.status == 303
        assert await _ledger(settings, "dlq_discards", letters.dlq_topic) == [
            ("ev-5", "linus", "known bad: decoder bug 12")
        ]
        listed = await client.get("/console/dlq", params={"topic": letters.dlq_topic})
        assert letters.refs["ev-5"] not in await listed.text()
        listed = await client.get(
            "/console/dlq", params={"topic": letters.dlq_topic, "include_discarded": "1"}
        )
        assert letters.refs["ev-5"] in await listed.text()
        r = await client.post(
            f"/console/dlq/{ref}/replay",
            data={"csrf": csrf, "mode": "replay", "reason": "try", "patch": ""},
        )
        assert r.status == 409 and "discarded records are not replayed" in await r.text()
        assert await _ledger(settings, "dlq_replays", letters.dlq_topic) == []


async def test_actions_need_a_login_and_the_sessions_csrf_token(
    settings: Settings, letters: Letters
) -> None:
    ref = letters.refs["ev-3"]
    replay = {"mode": "replay", "reason": "r", "patch": ""}
    async with console_client(console_settings(settings, public_read=True)) as client:
        # read-only without a login: pages yes, actions no
        assert (await client.get(f"/console/dlq/{ref}", headers=HTML)).status == 200
        csrf = await page_csrf(client, f"/console/dlq/{ref}")
        r = await client.post(f"/console/dlq/{ref}/replay", data={**replay, "csrf": csrf})
        assert r.status == 401
        r = await login(client, token="not-the-token")
        assert r.status == 401 and "not the admin token" in await r.text()
        assert (await login(client, who="")).status == 400
        assert (await login(client, who="ada")).status == 303
        csrf_anon = csrf
        csrf = await page_csrf(client, f"/console/dlq/{ref}")
        assert csrf != csrf_anon  # bound to the session now
        for data, headers in (
            (replay, JSON),  # no token
            ({**replay, "csrf": csrf_anon}, JSON),  # another binding's
            ({**replay, "csrf": csrf[:-2] + "xx"}, HTML),
        ):
            r = await client.post(f"/console/dlq/{ref}/replay", data=data, headers=headers)
            assert r.status == 403
            if headers is JSON:
                problem = await r.json()
                assert problem["type"] == "urn:eventpipe:problem:csrf"
                assert problem["errors"][0]["field"] == "csrf"
            else:
                assert "CSRF token" in await r.text()
        # the CSRF header works too (what the page's script would send)
        r = await client.post(
            f"/console/dlq/{ref}/discard",
            data={"reason": "dup"},
            headers={"X-CSRF-Token": csrf},
            allow_redirects=False,
        )
        assert r.status == 303
        r = await client.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)
        assert r.status == 303
        r = await client.post(f"/console/dlq/{ref}/replay", data={**replay, "csrf": csrf})
        assert r.status == 401
    assert await _ledger(settings, "dlq_replays", letters.dlq_topic) == []
    assert await _ledger(settings, "dlq_discards", letters.dlq_topic) == [("ev-3", "ada", "dup")]

    # without public_read every page wants the login first
    async with console_client(console_settings(settings)) as client:
        r = await client.get("/console/dlq", headers=HTML, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/console/login?next=")
        r = await client.get(f"/console/api/dlq/{ref}/preview", params={"patch": "."})
        assert r.status == 401
        assert (await r.json())["type"] == "urn:eventpipe:problem:login-required"
        assert (await client.get("/console/login", headers=HTML)).status == 200
        assert (await login(client)).status == 303
        assert (await client.get("/console/dlq", headers=HTML)).status == 200

    # without an admin token nobody logs in
    async with console_client(console_settings(settings, token=None, public_read=True)) as client:
        r = await login(client)
        assert r.status == 403 and "logins are off" in await r.text()


async def test_unknown_records_are_clear_errors(settings: Settings, letters: Letters) -> None:
    async with console_client(console_settings(settings, public_read=True)) as client:
        for path, words in (
            (f"/console/dlq/{letters.dlq_topic}:0:999", "no dead letter"),
            ("/console/dlq/no-such-topic.dlq:0:1", "no topic"),
            ("/console/dlq/not-a-ref", "not a dead letter"),
        ):
            r = await client.get(path, headers=HTML)
            assert r.status == 404 and words in await r.text()
            r = await client.get(path.replace("/dlq/", "/api/dlq/") + "/preview", headers=JSON)
            assert r.status == 404
            assert (await r.json())["type"] == "urn:eventpipe:problem:not-found"
        await login(client)
        csrf = await page_csrf(client, "/console/dlq")
        r = await client.post(
            f"/console/dlq/{letters.dlq_topic}:0:999/replay",
            data={"csrf": csrf, "mode": "replay", "reason": "x"},
        )
        assert r.status == 404
