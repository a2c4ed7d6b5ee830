"""The webhook source: ``POST /webhooks/{name}``, one route per configured source.

A request goes through, in this order, and stops at the first refusal:

1. concurrency cap (503) and token bucket (429), before the body is read;
2. the body, at most ``max_body_bytes`` once decoded (413; gzip and deflate are
   decoded, other codings 415, corrupt ones 400: eventpipe.http_body);
3. the signature over the raw bytes (401), before anything parses them;
4. JSON parsing (400; orjson refuses invalid UTF-8 and nesting deeper than 1024)
   or the CloudEvents HTTP binding (``input: cloudevents``);
5. mapping to a CloudEvent (422) and schema validation (422);
6. dedup on the delivery id (200 without producing again);
7. the broker's acknowledgement (200), or the Postgres spool (202), else 503 with
   Retry-After.  Never a 2xx for something not stored.  A 503 after the publish
   timeout does not mean "not stored": the broker may still acknowledge the write,
   and then its delivery ids are recorded in the dedup window, so the provider's
   retry is answered as a duplicate.

Refusals are RFC 9457 problem JSON naming the reason; those listed in
``dead_letter.on`` (422 by default) are also written to the dead-letter topic.
Secrets and signatures are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from eventpipe import metrics, telemetry
from eventpipe.context import Context
from eventpipe.dlq.writer import DeadLetterWriter
from eventpipe.envelope import CloudEvent, is_json_content_type
from eventpipe.envelope.kafka import KafkaMessage, to_kafka
from eventpipe.errors import BrokerUnavailableError, ConfigError, PermanentError
from eventpipe.http_body import BodyError, decodes_content_encoding, read_body
from eventpipe.http_ingress import broker_unavailable, check_batch, parse_events, record_too_large
from eventpipe.kafka.admin import prepare_source_topics
from eventpipe.kafka.client import RecordTooLargeError
from eventpipe.loop import cancel
from eventpipe.plugin import Plugin, Route, Source
from eventpipe.preflight import Problem, Reach, topic_problems
from eventpipe.problem import Refusal
from eventpipe.route_docs import RouteDoc
from eventpipe.schema_registry.lookup import subject_problems
from eventpipe.status import RECENT_ERRORS, Activity, ComponentStatus

from .config import WebhookConfig, WebhookEntry
from .delivery_ids import Dedup
from .limits import TokenBucket
from .mapping import JSON_CT, MappingError, WebhookMapper, digest
from .producer import BatchProducer
from .rejects import Reject, dead_letter
from .schema import BodyValidator, build_validator
from .spool import Relay, Spool, SpoolRecord, SpoolState
from .verify import VerificationError, Verified, make_verifier

log = logging.getLogger("eventpipe.webhook")
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_ID_LENGTH = 512
SPOOL_DEPTH_S = 5.0  # how often the spool's depth is read for status()


class Item(NamedTuple):
    """One event of a request: its id, its dedup key and its record."""

    id: str
    key: str
    message: KafkaMessage


def _ok(status: int, outcome: str, items: list[Item]) -> web.Response:
    body = orjson.dumps({"status": outcome, "ids": [i.id for i in items]})
    return web.Response(status=status, body=body, headers=JSON_HEADERS)


def _attributes(msg: KafkaMessage) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in msg.headers if k.startswith("ce_")]


def _event_attributes(event: CloudEvent) -> list[tuple[str, bytes]] | None:
    """A refused event's ``ce_*`` headers for its dead letter; None when an attribute
    cannot be encoded (not UTF-8: the refusal says so)."""
    try:
        return _attributes(to_kafka(event))
    except UnicodeError:
        return None


class WebhookSource(Source):
    """One webhook source: serves ``POST /webhooks/<name>`` (:meth:`routes`)."""

    type_name = "webhook"
    Config = WebhookConfig

    def __init__(
        self,
        config: WebhookConfig,
        *,
        name: str,
        ctx: Context,
        producer: BatchProducer | None = None,
    ) -> None:
        super().__init__(config, name=name)
        self.cfg = config
        self.ctx = ctx
        self.producer = producer or BatchProducer(
            ctx.settings.kafka, timeout_s=config.publish_timeout_s
        )
        self.producer.trace = ctx.publisher.trace  # the service's trace index, if on
        self.topic = config.topic
        self.verifier = make_verifier(config.verify)
        self.redacted = self.verifier.redacted
        self.mapper = WebhookMapper(config, name)
        self.validator: BodyValidator | None = None
        self.bucket = (
            TokenBucket(config.rate_limit.per_second, config.rate_limit.burst)
            if (config.rate_limit)
            else None
        )
        self.dlq_topic = config.dead_letter.topic or f"{config.topic}.dlq"
        self.dlq = DeadLetterWriter(ctx.publisher, self.dlq_topic, pool=ctx.pool)
        self.dlq_on = frozenset(config.dead_letter.on)
        pool = ctx.pool
        db = ctx.settings.database
        self.dedup = (
            Dedup(
                db.url.get_secret_value(),
                name,
                window_s=config.dedup.window_s,
                cache_size=config.dedup.cache_size,
                timeout_s=config.dedup.timeout_s,
                connect_timeout_s=db.connect_timeout_s,
            )
            if config.dedup.enabled and pool is not None
            else None
        )
        self.state = SpoolState()
        self.spool: Spool | None = None
        self.relay: Relay | None = None
        if config.spool == "postgres":
            if pool is None:
                raise ConfigError([("spool", "spool: postgres needs the database")])
            self.spool = Spool(
                pool,
                name,
                self.state,
                dedup=self.dedup is not None,
                timeout_s=config.publish_timeout_s,
            )
            self.relay = Relay(pool, name, self.state, ctx.publisher)
            self.relay.loop.on_failure = self.report_failure  # a bug: the service stops
        self._active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._by_status: dict[int, Any] = {}
        self._latency = metrics.INGEST_SECONDS.labels(source=name)
        self._dedup_seconds = metrics.WEBHOOK_STAGE_SECONDS.labels(source=name, stage="dedup")
        self._produce_seconds = metrics.WEBHOOK_STAGE_SECONDS.labels(source=name, stage="produce")
        self._dedup_hits = metrics.DEDUP_HITS.labels(source=name)
        self._late_acks = metrics.WEBHOOK_LATE_ACKS.labels(source=name)
        self._retry_after = {"Retry-After": str(config.retry_after_s)}
        self._route = f"/webhooks/{name}"
        self._span_attributes = {"eventpipe.source": name, "messaging.destination.name": self.topic}
        self._retry_hint = (
            "Retry with the same delivery id: once stored, it is answered as a duplicate"
            if self.dedup is not None
            else "Retry with the same delivery id: consumers deduplicate on the event id"
        )
        self.activity = Activity()
        self.refused: Counter[int] = Counter()  # answers >= 400, by status
        self.spool_depth: int | None = None
        self._depth_task: asyncio.Task[None] | None = None
        self._running = False

    @classmethod
    def build(cls, config: WebhookConfig, name: str, ctx: Context) -> WebhookSource:
        return cls(config, name=name, ctx=ctx)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        try:
            await self.producer.start()
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._check_topics()
        if self.cfg.validate_ is not None:
            self.validator = await build_validator(
                self.cfg.validate_,
                registry_url=self.cfg.registry_url,
                pool=self.ctx.pool,
                where=f"sources.{self.name}",
            )
        if self.dedup is not None:
            await self.dedup.start()
        if self.spool is not None and self.relay is not None:
            self.spool_depth = await self.spool.pending()
            if self.spool_depth:
                self.state.active = True
                self.log.info("spooled requests are waiting; relaying them first")
            await self.relay.start()
            self._depth_task = asyncio.create_task(self._watch_spool())
        if self.cfg.scheme == "none":
            self.log.warning("verification is off (scheme: none); anyone can post here")

    async def _check_topics(self) -> None:
        await prepare_source_topics(
            self.ctx.admin,
            self.ctx.settings.kafka,
            topic=self.topic,
            dlq_topic=self.dlq_topic if self.dlq_on else None,
            where=f"sources.{self.name}",
        )

    async def stop(self) -> None:
        """Once the HTTP server stopped taking requests (the service drains it first):
        relay, spool, dedup, then the producer (its batches in flight finish)."""
        if not self._running:
            return
        self._running = False
        task, self._depth_task = self._depth_task, None
        await cancel(task)
        try:
            if self.relay is not None:
                await self.relay.stop()
            if self.spool is not None:
                await self.spool.drain()
            if self.dedup is not None:
                await self.dedup.stop()
        finally:
            await self.producer.stop()

    async def _watch_spool(self) -> None:
        assert self.spool is not None
        while True:
            await asyncio.sleep(SPOOL_DEPTH_S)
            try:
                self.spool_depth = await self.spool.pending()
            except Exception as exc:  # status only: the relay reports its own failures
                self.log.debug("reading the spool's depth failed: %s", exc)

    def position(self) -> Any:
        return {"spooling": self.state.active}

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST", "/webhooks/{name}", self.handle, name="webhooks", match=("name", self.name)
            )
        ]

    def status(self) -> ComponentStatus:
        details: dict[str, Any] = {
            "topic": self.topic,
            "in_flight": self._active,
            "refused": {str(k): v for k, v in sorted(self.refused.items())},
        }
        if self.spool is not None:
            details["spooling"] = self.state.active
            details["spool_depth"] = self.spool_depth
        loop = self.relay.loop if self.relay is not None else None
        failed = loop is not None and loop.state == "failed"
        st = self.activity.status(
            name=self.name,
            kind=self.kind,
            type=self.type_name,
            state="failed" if failed else "running" if self._running else "stopped",
            details=details,
        )
        if failed and loop is not None:  # the spool relay stopped on a bug: say which
            st.last_error = loop.error_info()
            errors = sorted([*st.recent_errors, *loop.recent_errors()], key=lambda e: e.at)
            st.recent_errors = errors[-RECENT_ERRORS:]
        st.dead_letters = dict(self.dlq.written)
        return st

    # -------------------------------------------------------------- request
    @decodes_content_encoding  # gzip and deflate bodies, within max_body_bytes
    async def handle(self, request: web.Request) -> web.Response:
        sender = telemetry.incoming(request.headers)
        with telemetry.server_span(self._route, sender, self._span_attributes) as span:
            resp = await self._handle(request, sender)
            telemetry.set_http_status(span, resp.status)
        return resp

    async def _handle(
        self, request: web.Request, sender: telemetry.TraceContext | None
    ) -> web.Response:
        if self._active >= self.cfg.max_concurrency:
            resp = Reject(
                503,
                "overloaded",
                "too many requests in progress; retry shortly",
                headers={"Retry-After": "1"},
            ).response(self.name)
            return self._count(resp)
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait:
                resp = Reject(
                    429,
                    "rate-limited",
                    "the source's rate limit is exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                ).response(self.name)
                return self._count(resp)
        started = time.perf_counter()
        self._active += 1
        body: bytes | None = None
        try:
            body = await self._read(request)
            resp = await self._process(request, body, started, telemetry.received(sender))
        except Reject as reject:
            resp = await self._refuse(request, reject, body)
        finally:
            self._active -= 1
        return self._count(resp)

    def _count(self, resp: web.Response) -> web.Response:
        if resp.status >= 400:
            self.refused[resp.status] += 1
        child = self._by_status.get(resp.status)
        if child is None:
            child = self._by_status[resp.status] = metrics.WEBHOOK_REQUESTS.labels(
                source=self.name, status=str(resp.status)
            )
        child.inc()
        return resp

    async def _read(self, request: web.Request) -> bytes:
        """The body, within ``request_timeout_s`` (no timer when it is already here)."""
        limit = self.cfg.max_body_bytes
        length = request.content_length
        try:
            if length is not None and length <= limit and request.content.total_bytes >= length:
                return await read_body(request, limit, "max_body_bytes")  # all buffered
            async with asyncio.timeout(self.cfg.request_timeout_s):
                return await read_body(request, limit, "max_body_bytes")
        except BodyError as exc:
            raise Reject.of(exc) from None
        except TimeoutError:
            raise Reject(
                503,
                "timeout",
                f"the body did not arrive within {self.cfg.request_timeout_s:g}s",
                headers=self._retry_after,
            ) from None

    async def _process(
        self,
        request: web.Request,
        body: bytes,
        started: float,
        trace: telemetry.TraceContext | None,
    ) -> web.Response:
        headers = request.headers
        now = time.time()
        try:
            verified = self.verifier.verify(headers, body, now)
        except VerificationError as exc:
            metrics.WEBHOOK_VERIFY_FAILURES.labels(source=self.name, reason=exc.reason).inc()
            raise Reject(
                401,
                "unauthorized",
                exc.detail,
                field=exc.field,
                reason=exc.reason,
                headers={"WWW-Authenticate": f'Signature scheme="{self.cfg.scheme}"'},
            ) from exc
        body_digest = digest(body)
        if self.cfg.input == "json":
            received = datetime.fromtimestamp(now, UTC)
            items = [self._json_item(headers, body, verified, received, body_digest)]
            telemetry.stamp_headers(items[0].message.headers, trace)
        else:
            items = self._cloudevent_items(headers, body, body_digest, trace)
        return await self._store(items, started)

    # ------------------------------------------------------------- decoding
    def _json_item(
        self,
        headers: Mapping[str, str],
        body: bytes,
        verified: Verified,
        received: datetime,
        body_digest: str,
    ) -> Item:
        ct = headers.get("Content-Type")
        if ct is not None and ct != JSON_CT and not is_json_content_type(ct):
            raise Reject(
                415,
                "unsupported-media-type",
                f"content type {ct!r} is not JSON; send application/json",
                field="content-type",
                reason="not JSON",
            )
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Reject(
                400,
                "malformed",
                f"the body is not valid JSON: {exc.msg}",
                field="body",
                reason=exc.msg,
            ) from None
        jq_headers = self._jq_headers(headers) if self.mapper.uses_headers else None
        try:
            event_id, msg = self.mapper.message(
                raw=body,
                body=value,
                headers=jq_headers,
                verified=verified,
                received=received,
                body_digest=body_digest,
            )
        except MappingError as exc:
            raise Reject(
                422, "mapping-failed", str(exc), field=exc.field, reason=exc.reason
            ) from exc
        item = Item(event_id, event_id, msg)
        self._check_id(event_id)
        if self.validator is not None:
            self._validate(value, item)
        return item

    def _cloudevent_items(
        self,
        headers: Mapping[str, str],
        body: bytes,
        body_digest: str,
        trace: telemetry.TraceContext | None,
    ) -> list[Item]:
        try:
            events = parse_events(headers, body)
            check_batch(len(events), self.cfg.max_batch_events, "max_batch_events")
        except Refusal as exc:
            raise Reject.of(exc) from exc.__cause__
        if not events:
            raise Reject(400, "malformed", "the batch is empty", field="body", reason="empty")
        jq_headers = self._jq_headers(headers) if self.mapper.uses_headers else None
        items = []
        for event in events:
            try:
                self.mapper.decorate(event, jq_headers, body_digest)
            except MappingError as exc:
                raise Reject(
                    422,
                    "mapping-failed",
                    str(exc),
                    field=exc.field,
                    reason=exc.reason,
                    attributes=_event_attributes(event),
                ) from exc
            self._check_id(event.id)
            telemetry.stamp(event, trace)
            item = Item(event.id, f"{event.source} {event.id}", to_kafka(event))
            if self.validator is not None:
                self._validate(event.data, item)
            items.append(item)
        return items

    def _jq_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        hidden = self.redacted
        out = {}
        for k, v in headers.items():
            lk = k.lower()
            if lk not in hidden:
                out[lk] = v
        return out

    @staticmethod
    def _check_id(event_id: str) -> None:
        if len(event_id) > MAX_ID_LENGTH or "\x00" in event_id:
            raise Reject(
                422,
                "invalid-event",
                "the event id is too long or holds NUL",
                field="id",
                reason=f"at most {MAX_ID_LENGTH} characters, no NUL",
            )

    def _validate(self, value: Any, item: Item) -> None:
        assert self.validator is not None
        violations = self.validator.violations(value)
        if violations:
            raise Reject(
                422,
                "schema-violation",
                f"the body does not match the schema ({len(violations)} violation(s))",
                reason="schema",
                attributes=_attributes(item.message),
                errors=[{"field": v.path, "reason": f"{v.rule}: {v.message}"} for v in violations],
            )

    # -------------------------------------------------------------- storing
    async def _store(self, items: list[Item], started: float) -> web.Response:
        """Dedup, then store what is new.  A delivery being stored by a concurrent
        request is awaited, not stored twice."""
        loop = self._loop or asyncio.get_running_loop()
        claims: dict[str, asyncio.Future[bool]] = {}
        known: set[str] = set()  # claimed here, but found stored before
        fresh: list[Item] = []
        inflight = self._inflight
        stored = False
        t_dedup = time.perf_counter()
        try:
            for item in items:
                key = item.key
                if key in claims or (key in inflight and await self._stored_elsewhere(key)):
                    self._dedup_hits.inc()
                    continue
                claims[key] = inflight[key] = loop.create_future()
                if self.dedup is not None and await self._seen(key):
                    known.add(key)
                    self._dedup_hits.inc()
                    continue
                fresh.append(item)
            self.activity.events_in.mark(len(items))
            t_write = time.perf_counter()
            if self.dedup is not None:
                self._dedup_seconds.observe(t_write - t_dedup)
            if not fresh:
                return _ok(200, "duplicate", items)
            status = await self._write(fresh)
            self._produce_seconds.observe(time.perf_counter() - t_write)
            stored = True
            self.activity.events_out.mark(len(fresh))
        finally:
            for key, fut in claims.items():
                if inflight.get(key) is fut:
                    del inflight[key]
                fut.set_result(stored or key in known)
        self._latency.observe(time.perf_counter() - started)
        return _ok(status, "stored" if status == 200 else "spooled", items)

    async def _stored_elsewhere(self, key: str) -> bool:
        """Another request is storing the same delivery right now: wait for its
        outcome.  True when it stored it; False when it failed (we try ourselves)."""
        while (pending := self._inflight.get(key)) is not None:
            if await asyncio.shield(pending):
                return True
        return False

    async def _seen(self, key: str) -> bool:
        assert self.dedup is not None
        try:
            return await self.dedup.seen(key)
        except Exception as exc:
            # Fail open: the broker write still happens; downstream dedup on id is the
            # backstop.  Refusing would turn a database hiccup into lost webhooks.
            self.log.warning("dedup check unavailable (%s); producing", type(exc).__name__)
            return False

    async def _write(self, items: list[Item]) -> int:
        if self.spool is not None and self.state.active:
            return await self._spooled(items)
        keys = [i.key for i in items]
        try:
            # bounded by publish_timeout_s; a late acknowledgement records the ids
            await self.producer.send(
                self.topic,
                [i.message for i in items],
                ids=[i.id for i in items],
                on_late_ack=lambda: self._late_ack(keys),
            )
        except BrokerUnavailableError as exc:
            self.activity.failed(exc)
            if self.spool is None:
                refusal = broker_unavailable(
                    f"the broker did not acknowledge within {self.cfg.publish_timeout_s:g}s; "
                    f"the event may still be stored. {self._retry_hint}",
                    self.cfg.retry_after_s,
                    stored="unknown",
                )
                raise Reject.of(refusal) from exc
            if not self.state.active:
                self.state.active = True
                self.log.warning(
                    "broker unavailable (%s); spooling to Postgres", type(exc).__name__
                )
            return await self._spooled(items)
        except RecordTooLargeError as exc:
            raise Reject.of(record_too_large(str(exc), field="body")) from exc
        except PermanentError as exc:
            self.activity.failed(exc)
            self.log.error("producing to %s failed: %s", self.topic, exc)
            raise Reject(
                503, "produce-failed", "the broker refused the write", headers=self._retry_after
            ) from exc
        if self.dedup is not None:
            self.dedup.remember(keys)
        return 200

    def _late_ack(self, keys: list[str]) -> None:
        """The broker acknowledged a write after its request got 503: a retry of it is
        a duplicate from now on."""
        self._late_acks.inc()
        if self.dedup is not None:
            self.dedup.remember(keys)

    async def _spooled(self, items: list[Item]) -> int:
        assert self.spool is not None
        records = [SpoolRecord(self.topic, i.id, i.message) for i in items]
        keys = [i.key for i in items]
        try:
            await self.spool.write(records, keys)
        except PermanentError as exc:  # this request's row; the others' committed
            raise Reject(
                422,
                "unstorable",
                f"the spool refused the request's row ({type(exc.__cause__).__name__})",
                field="event",
                reason="not storable in Postgres",
            ) from exc
        except Exception as exc:
            self.activity.failed(exc)
            self.log.error("spooling failed (%s); answering 503", type(exc).__name__)
            raise Reject(
                503,
                "spool-unavailable",
                "neither the broker nor the spool could store the request; retry later",
                headers=self._retry_after,
            ) from exc
        if self.dedup is not None:
            for key in keys:
                self.dedup.recent.add(key)
        return 202

    # -------------------------------------------------------------- refusing
    async def _refuse(
        self, request: web.Request, reject: Reject, body: bytes | None
    ) -> web.Response:
        self.log.debug("refused %d %s (%s)", reject.status, reject.slug, reject.reason)
        extra: dict[str, Any] = {}
        if reject.status in self.dlq_on:
            letter = dead_letter(
                reject,
                source=self.name,
                body=body,
                headers=request.headers,
                redacted=self.redacted,
            )
            try:
                async with asyncio.timeout(self.cfg.publish_timeout_s):
                    await self.dlq.write([letter])
                extra["dead_letter"] = self.dlq_topic
            except Exception as exc:
                self.log.error(
                    "dead letter for a %d refusal not written: %s",
                    reject.status,
                    type(exc).__name__,
                )
                extra["dead_letter"] = None
        return reject.response(self.name, **extra)


async def check_webhook(cfg: WebhookEntry, reach: Reach) -> list[Problem]:
    """Start-time checks: the topic exists (or will be created) and the subject
    bodies are validated against is registered."""
    problems = await topic_problems(reach, [("topic", cfg.topic)])
    v = cfg.validate_
    if v is not None and v.subject is not None:
        problems.extend(
            await subject_problems(
                reach, [("validate.subject", v.subject, v.version)], registry_url=cfg.registry_url
            )
        )
    return problems


ROUTES = (
    RouteDoc(
        "POST",
        "/webhooks/{name}",
        "a webhook delivery for the source of that name: verified, mapped to a CloudEvent, "
        "2xx once the broker (or the spool) has it",
        "the source's `verify` scheme: a signature over the body (Standard Webhooks, Stripe, "
        "GitHub, HMAC), or none",
    ),
)
"""The route every webhook source serves (one per source name)."""

PLUGIN = Plugin(
    "source",
    "webhook",
    WebhookEntry,
    WebhookSource.build,
    "HTTP webhooks (Standard Webhooks, Stripe, GitHub, HMAC) as CloudEvents on a topic",
    check=check_webhook,
    example="""\
- type: webhook
  name: billing                       # served at POST /webhooks/billing
  topic: billing.events
  verify:
    scheme: standard-webhooks         # standard-webhooks | stripe | github | hmac | none
    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]   # several: key rotation
    tolerance_s: 300
  event:                              # jq over {body, headers}
    type: .body.type
    subject: .body.data.customer_id
    partitionkey: .body.data.customer_id
  validate: billing-value             # a schema registry subject (or {schema: {...}})
  spool: postgres                     # broker down: 202 from a PostgreSQL spool
  rate_limit: {per_second: 500, burst: 1000}
- type: webhook
  name: shop                          # a provider's own HMAC over the body
  topic: shop.orders
  verify: {scheme: hmac, secrets: [demo-secret-change-me], header: x-signature}
  event: {type: '"shop.order." + .body.status', partitionkey: .body.customer}
""",
)
