"""`eventpipe trace` against the real broker and PostgreSQL: an event that came in
by webhook, went through three pipelines (delivered into Postgres by one, filtered
by another, dead-lettered by the third, then replayed), is traced step by step,
through the Python API, the command and GET /v1/trace/{event_id}; the index
survives a restart; a fingerprint collision is checked against Kafka and never
taken for the event; an event written outside the service is found through the
pipeline that read it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from eventpipe.console.render import ENV
from eventpipe.db.pool import open_pool
from eventpipe.dlq.ops import Dlq
from eventpipe.dlq.query import Filters
from eventpipe.envelope import CloudEvent
from eventpipe.envelope.http import to_http_batch
from eventpipe.publisher import Publisher
from eventpipe.service.runner import Service
from eventpipe.settings import Settings, TopicSpec
from eventpipe.trace.lookup import Trace, trace_event
from eventpipe.trace_hook import fingerprint
from tests.cli_probe import SERVICE, loaded, probe
from tests.helpers import read_events, read_records
from tests.integration.console_support import HTML, console_client, console_settings, login
from tests.integration.test_cdc_support import caught_up, cdc_source, execute, unique
from tests.integration.test_dlq_pipeline import eventpipe
from tests.integration.test_pipeline_support import ident, sql, wait_rows

TOKEN = "trace-test-token"


def service_settings(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "service": settings.service.model_copy(update={"admin_token": SecretStr(TOKEN)}),
            **update,
        }
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings, role: str = "all") -> AsyncIterator[Service]:
    svc = Service(settings, role)  # type: ignore[arg-type]
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def traced(
    settings: Settings,
    event_id: str,
    until: Callable[[Trace], bool],
    *,
    source: str | None = None,
    timeout: float = 30.0,
) -> Trace:
    """The trace once ``until`` holds (the index is written about once a second)."""
    since = datetime.now(UTC) - timedelta(hours=1)
    pool = await open_pool(settings.database)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            trace = await trace_event(settings, pool, event_id, since=since, source=source)
            if until(trace) or asyncio.get_running_loop().time() > deadline:
                return trace
            await asyncio.sleep(0.3)
    finally:
        await pool.close()


def console_page(doc: dict[str, Any]) -> str:
    """The console's trace page for ``doc``, as /console/trace renders it."""
    return ENV.get_template("trace.html").render(
        request_path="/console/trace",
        who="ada",
        logins=True,
        public_read=False,
        csrf="-",
        form={"id": doc["event_id"], "source": "", "since": "24h"},
        doc=doc,
        problem=None,
        missing=None,
    )


def reads(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["pipeline"]: p for p in doc["pipelines"]}


async def test_a_webhook_event_is_traced_through_pipelines_a_dead_letter_and_its_replay(
    settings: Settings,
) -> None:
    topic = ident("trace_in")
    p_rows, p_big, p_strict = ident("rows"), ident("big"), ident("strict")
    url = settings.database.url.get_secret_value()
    for table in (p_rows, p_big, p_strict):
        await sql(url, f"create table {table} (id text, total numeric)")

    def pipeline(name: str, **extra: Any) -> dict[str, Any]:
        columns = {"id": ".data.id", "total": ".data.total"}
        return {
            "name": name,
            "source": {"topics": [topic]},
            "sinks": [{"postgres": {"table": name, "columns": columns}}],
            **extra,
        }

    s = service_settings(
        settings,
        topics=[TopicSpec(name=topic, partitions=3)],
        sources=[
            {
                "type": "webhook",
                "name": "shop",
                "topic": topic,
                "verify": {"scheme": "none"},
                "event": {"id": ".body.id", "type": '"shop.order"', "partitionkey": ".body.id"},
            }
        ],
        pipelines=[
            pipeline(p_rows),
            pipeline(p_big, steps=[{"filter": ".data.total > 100"}]),
            pipeline(
                p_strict,
                validate_input={"schema": {"type": "object", "required": ["currency"]}},
            ),
        ],
    )
    event_id = f"o-{ident('')}"
    async with serving(s) as svc:
        async with aiohttp.ClientSession() as http:
            body = orjson.dumps({"id": event_id, "total": 42})
            headers = {"content-type": "application/json"}
            async with http.post(f"{svc.url}/webhooks/shop", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
            # the provider retries: answered as a duplicate, not stored again
            async with http.post(f"{svc.url}/webhooks/shop", data=body, headers=headers) as r:
                assert (await r.json())["status"] == "duplicate"
        assert await wait_rows(url, f"select count(*) from {p_rows}", 1) == 1
        dlq_topic = f"{p_strict}.dlq"
        assert len(await read_records(s.kafka.bootstrap, dlq_topic, 1, timeout=30)) == 1

        pool = await open_pool(s.database)
        try:
            dlq = Dlq(s, pool)
            entries = await dlq.select([dlq_topic], Filters())
            report = await dlq.replay([dlq_topic], entries, patch='.data.currency = "EUR"')
            assert report.replayed == 1, report
        finally:
            await pool.close()
        assert await wait_rows(url, f"select count(*) from {p_strict}", 1) == 1

        def complete(t: Trace) -> bool:
            return len(t.records) == 3 and all(
                len(f.reads) == 3 for f in t.records if not f.dead_letter
            )

        trace = await traced(s, event_id, complete)
        doc = trace.to_doc()
        assert doc["found"], doc
        original, letter, replayed = doc["records"]

        # where it came in
        assert (original["topic"], original["via"]) == (topic, "webhook")
        assert original["came_in"]["kind"] == "webhook"
        assert original["came_in"]["source"] == "shop"
        assert original["came_in"]["delivery_id"] == event_id
        assert original["event"]["id"] == event_id and original["event"]["type"] == "shop.order"
        assert doc["webhook_dedup"] and doc["webhook_dedup"][0]["delivery_id"] == event_id
        # what each pipeline did with it
        first = reads(original)
        assert first[p_rows]["outcome"] == "delivered"
        assert first[p_rows]["delivered_to"] == ["postgres"]
        assert first[p_big]["outcome"] == "filtered" and first[p_big]["delivered_to"] == []
        assert first[p_strict]["outcome"] == "dead-lettered"
        assert first[p_strict]["dead_letter"] == {"stage": "validate", "step": "validate_input"}
        # the dead letter, and its replay
        assert (letter["topic"], letter["via"]) == (dlq_topic, "dead-letter")
        assert letter["dead_letter"]["stage"] == "validate"
        assert letter["dead_letter"]["exception"]["class"].endswith("SchemaValidationError")
        assert letter["dead_letter"]["origin"] == {
            "topic": topic,
            "partition": original["partition"],
            "offset": original["offset"],
        }
        assert len(letter["replays"]) == 1 and letter["discards"] == []
        target = letter["replays"][0]["target"]
        assert (replayed["topic"], replayed["partition"], replayed["offset"]) == (
            target["topic"],
            target["partition"],
            target["offset"],
        )
        assert replayed["came_in"]["kind"] == "replay"
        again = reads(replayed)
        assert again[p_strict]["outcome"] == "delivered"
        assert again[p_rows]["outcome"] == "duplicate"  # state.dedup_window
        assert again[p_big]["outcome"] == "duplicate"
        # the console's page of the same document
        html = console_page(doc)
        assert "webhook <strong>shop</strong>" in html
        assert f'href="/console/dlq/{dlq_topic}%3A{letter["partition"]}%3A0"' in html
        assert "replay of dead letter" in html and "not replayed or discarded" not in html
        assert html.count("dead-lettered") == 1 and html.count('class="ok">delivered') == 2

        # the same over HTTP: admin token, 401 without, 404 with where it looked
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"{svc.url}/v1/trace/{event_id}", headers=auth) as r:
                assert r.status == 200
                api = await r.json()
            assert [(x["topic"], x["offset"]) for x in api["records"]] == [
                (x["topic"], x["offset"]) for x in doc["records"]
            ]
            async with http.get(f"{svc.url}/v1/trace/{event_id}") as r:
                assert r.status == 401
            async with http.get(f"{svc.url}/v1/trace/no-such-{event_id}", headers=auth) as r:
                assert r.status == 404
                problem = await r.json()
                assert problem["looked"]["trace_produced"]["rows"] >= 1
            async with http.get(
                f"{svc.url}/v1/trace/{event_id}?since=yesterdayish", headers=auth
            ) as r:
                assert r.status == 400
                assert (await r.json())["errors"][0]["field"] == "since"

    # and from the command line, with the service stopped (the index is in Postgres)
    cmd = await eventpipe(s, "trace", event_id, "--json")
    assert cmd.returncode == 0, cmd.stderr.decode()
    cli = orjson.loads(cmd.stdout)
    assert [x["offset"] for x in cli["records"]] == [x["offset"] for x in doc["records"]]
    cmd = await eventpipe(s, "trace", event_id)
    assert cmd.returncode == 0, cmd.stderr.decode()
    text = cmd.stdout.decode()
    assert "came in: webhook shop" in text and "dead-lettered at validate" in text
    assert "replayed" in text
    cmd = await eventpipe(s, "trace", f"missing-{event_id}")
    assert cmd.returncode == 1
    assert "not found" in cmd.stdout.decode() and "trace_produced row(s)" in cmd.stdout.decode()
    cmd = await eventpipe(s, "trace", event_id, "--since", "last tuesday")
    assert cmd.returncode == 2 and "--since" in cmd.stderr.decode()
    # the command, run to the end, loaded its readers and none of the service
    results, modules = await asyncio.to_thread(
        probe,
        f"results = [run('trace', {event_id!r}, '--json')]",
        {
            "EVENTPIPE_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "EVENTPIPE_DATABASE_URL": s.database.url.get_secret_value(),
        },
    )
    [(code, out, err)] = results
    assert code == 0 and orjson.loads(out)["found"], err
    assert {"eventpipe.trace.fetch", "aiokafka", "psycopg_pool"} <= modules
    assert loaded(modules, SERVICE) == []


async def test_the_index_survives_a_restart_and_publish_api_events_are_traced(
    settings: Settings,
) -> None:
    topic = ident("trace_pub")
    s = service_settings(settings, topics=[TopicSpec(name=topic, partitions=3)])
    events = [CloudEvent.create("t.x", "/pub", {"i": i}, id=f"{topic}-{i}") for i in range(50)]
    async with serving(s, "ingest") as svc, aiohttp.ClientSession() as http:
        headers, body = to_http_batch(events)
        async with http.post(
            f"{svc.url}/v1/topics/{topic}/events", data=body, headers=headers
        ) as r:
            assert r.status == 202
            acks = {e["id"]: (e["partition"], e["offset"]) for e in (await r.json())["events"]}
    # stopped: what the writer held was written at stop; a new process reads it
    async with serving(s, "ingest"):
        for e in (events[0], events[17], events[49]):
            trace = await traced(s, e.id, lambda t: t.found, timeout=5)
            assert [(f.partition, f.offset) for f in trace.records] == [acks[e.id]]
            assert trace.records[0].via == "publish-api"
            assert trace.records[0].came_in["kind"] == "publish-api"
            assert trace.records[0].event["source"] == "/pub"
    # --source narrows it to that source
    other = await traced(s, events[3].id, lambda t: False, source="/elsewhere", timeout=0)
    assert not other.found


async def test_a_fingerprint_collision_is_checked_in_kafka_and_not_taken_for_the_event(
    settings: Settings,
) -> None:
    topic = ident("trace_fp")
    s = service_settings(settings, topics=[TopicSpec(name=topic, partitions=1)])
    decoy = CloudEvent.create("t.x", "/fp", {"n": 1}, id=f"{topic}-decoy")
    real = CloudEvent.create("t.x", "/fp", {"n": 2}, id=f"{topic}-real")
    async with serving(s, "ingest") as svc:
        pub = svc.ctx.publisher if svc.ctx else None
        assert pub is not None
        (d_ack,) = await pub.publish_batch(topic, [decoy])
        (r_ack,) = await pub.publish_batch(topic, [real])
        await traced(s, real.id, lambda t: t.found, timeout=10)
    # a row claiming the decoy's record holds the real id (as a CRC-32 collision would)
    url = settings.database.url.get_secret_value()
    await sql(
        url,
        "insert into eventpipe.trace_produced (at, topic, partition, via, batches, fps) "
        "values (now(), %s, 0, 'publisher', %s, %s)",
        [topic, [d_ack.offset, 1], fingerprint(real.id)],
    )
    trace = await traced(s, real.id, lambda t: True, timeout=0)
    assert [(f.topic, f.offset) for f in trace.records] == [(topic, r_ack.offset)]
    assert trace.looked["candidates"] == 2 and trace.looked["checked_in_kafka"] == 2
    # an id only the colliding row names: checked, and not found
    await sql(
        url,
        "insert into eventpipe.trace_produced (at, topic, partition, via, batches, fps) "
        "values (now(), %s, 0, 'publisher', %s, %s)",
        [topic, [d_ack.offset, 1], fingerprint("nobody")],
    )
    nobody = await traced(s, "nobody", lambda t: True, timeout=0)
    assert not nobody.found
    assert nobody.looked["checked_in_kafka"] >= 1


async def test_an_event_written_outside_the_service_is_found_through_its_pipeline(
    settings: Settings,
) -> None:
    topic = ident("trace_ext")
    name = ident("ext")
    url = settings.database.url.get_secret_value()
    await sql(url, f"create table {name} (id text)")
    s = service_settings(
        settings,
        topics=[TopicSpec(name=topic, partitions=1)],
        pipelines=[
            {
                "name": name,
                "source": {"topics": [topic]},
                "steps": [{"jq": {"program": '.id = "out-" + .id', "apply_to": "event"}}],
                "sinks": [{"postgres": {"table": name, "columns": {"id": ".id"}}}],
            }
        ],
    )
    ev = CloudEvent.create("t.x", "/ext", {"n": 1}, id=f"{name}-1")
    async with serving(s, "pipelines"):
        async with Publisher(settings) as outside:  # not the service's: not indexed
            (ack,) = await outside.publish_batch(topic, [ev])
        assert await wait_rows(url, f"select count(*) from {name}", 1) == 1
        trace = await traced(s, ev.id, lambda t: bool(t.records and t.records[0].reads))
    (found,) = trace.records
    assert (found.offset, found.via, found.came_in["kind"]) == (ack.offset, None, "external")
    (read,) = found.reads
    assert (read.pipeline, read.outcome, read.outputs) == (name, "delivered", [f"out-{ev.id}"])
    # the output id leads back to its input
    out = await traced(s, f"out-{ev.id}", lambda t: t.found, timeout=5)
    assert out.derived_from == [
        {
            "pipeline": name,
            "at": out.derived_from[0]["at"],
            "input": {
                "topic": topic,
                "partition": 0,
                "offset": ack.offset,
                "event_id": ev.id,
                "source": "/ext",
            },
        }
    ]


async def test_a_cdc_event_says_its_lsn_transaction_table_and_operation(
    settings: Settings,
) -> None:
    table = unique("orders")
    await execute(settings, f"create table {table} (id int primary key, total numeric)")
    async with cdc_source(settings, tables=[table], snapshot="never") as src:
        await execute(settings, f"insert into {table} values (1, 9.5)")
        await caught_up(settings, src)
        (ev,) = await read_events(settings.kafka.bootstrap, f"{src.name}.public.{table}", 1)
    trace = await traced(settings, ev.id, lambda t: t.found, timeout=10)
    (found,) = trace.records
    assert found.via == f"source:{src.name}"
    assert found.came_in == {
        "kind": "cdc",
        "lsn": ev.extensions["cdclsn"],
        "tx_id": ev.data["source"]["txId"],
        "table": f"public.{table}",
        "committed": found.came_in["committed"],
        "snapshot": ev.data["source"]["snapshot"],
        "op": "c",
        "written": found.came_in["written"],
    }
    assert ev.time is not None
    committed = datetime.fromisoformat(found.came_in["committed"].replace("Z", "+00:00"))
    # the commit time (source.ts_ms), the event's time to the millisecond
    assert committed == ev.time.replace(microsecond=ev.time.microsecond // 1000 * 1000)
    html = console_page(trace.to_doc())
    assert f"table <code>public.{table}</code> op <code>c</code> LSN" in html


async def test_the_console_page_traces_an_event_behind_the_login(settings: Settings) -> None:
    topic = ident("trace_console")
    s = console_settings(settings.model_copy(update={"topics": [TopicSpec(name=topic)]}))
    ev = CloudEvent.create("t.x", "/console", {"n": 1}, id=f"{topic}-1")
    async with console_client(s) as client:
        headers, body = to_http_batch([ev])
        r = await client.post(f"/v1/topics/{topic}/events", data=body, headers=headers)
        assert r.status == 202
        (ack,) = (await r.json())["events"]
        page = {"id": ev.id}
        r = await client.get("/console/trace", params=page, headers=HTML, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/console/login")
        await login(client)
        html = ""
        for _ in range(50):  # the index is written about once a second
            r = await client.get("/console/trace", params=page, headers=HTML)
            assert r.status == 200
            html = await r.text()
            if "not-found" not in html:
                break
            await asyncio.sleep(0.2)
        assert f"{topic}:{ack['partition']}:{ack['offset']}" in html
        assert "POST /v1/topics/{topic}/events" in html and "publish-api" in html
        # an id that is nowhere: said so, with where it looked; escaped as text
        r = await client.get("/console/trace", params={"id": "<b>nope</b>"}, headers=HTML)
        assert r.status == 200
        html = await r.text()
        assert 'id="not-found"' in html and "trace_produced row(s)" in html
        assert "&lt;b&gt;nope&lt;/b&gt;" in html and "<b>nope</b>" not in html
        r = await client.get("/console/trace", params={**page, "since": "soon"}, headers=HTML)
        assert r.status == 400 and "since" in await r.text()
    # with the console's public_read, the page and /v1/trace read without a login
    open_read = console_settings(s, public_read=True)
    async with console_client(open_read) as client:
        r = await client.get(f"/v1/trace/{ev.id}")
        assert r.status == 200 and (await r.json())["records"][0]["offset"] == ack["offset"]
        r = await client.get("/console/trace", params=page, headers=HTML)
        assert r.status == 200 and f"{topic}:{ack['partition']}:{ack['offset']}" in await r.text()
