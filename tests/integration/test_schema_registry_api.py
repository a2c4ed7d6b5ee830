"""The registry's REST API against real PostgreSQL: shapes, error codes, deletes,
config and mode, references, every compatibility level, concurrency."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from eventpipe.db.pool import open_pool
from eventpipe.schema_registry.server import build_registry_app
from eventpipe.settings import Settings

CT = "application/vnd.schemaregistry.v1+json"


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"params": params or None}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": CT}
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            raw = await resp.read()
            if resp.status < 300 or raw.startswith(b"{"):
                assert resp.content_type == CT, (resp.content_type, raw)
            return resp.status, json.loads(raw) if raw else None

    async def register(self, subject: str, schema: Any, **extra: Any) -> tuple[int, Any]:
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return await self.call("POST", f"/subjects/{subject}/versions", {"schema": text, **extra})

    async def ok_register(self, subject: str, schema: Any, **extra: Any) -> int:
        status, body = await self.register(subject, schema, **extra)
        assert status == 200, body
        return int(body["id"])


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    pool = await open_pool(settings.database)
    server = TestServer(build_registry_app(pool), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
        await pool.close()


@pytest.fixture
def subject() -> str:
    return f"sr-{uuid.uuid4().hex[:12]}-value"


def rec(*fields: tuple[str, Any] | dict[str, Any], name: str = "Order") -> dict[str, Any]:
    out = []
    for fld in fields:
        out.append(fld if isinstance(fld, dict) else {"name": fld[0], "type": fld[1]})
    return {"type": "record", "name": name, "namespace": "com.acme", "fields": out}


async def test_register_and_read_back(api: Api, subject: str) -> None:
    schema_id = await api.ok_register(subject, rec(("id", "long")))
    status, body = await api.call("GET", f"/subjects/{subject}/versions/1")
    assert status == 200
    assert body == {
        "subject": subject,
        "version": 1,
        "id": schema_id,
        "schema": json.dumps(rec(("id", "long")), separators=(",", ":")),
    }
    assert await api.call("GET", f"/subjects/{subject}/versions/latest") == (200, body)
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [1])
    assert await api.call("GET", f"/schemas/ids/{schema_id}") == (200, {"schema": body["schema"]})
    status, raw = await api.call("GET", f"/subjects/{subject}/versions/1/schema")
    assert (status, raw) == (200, rec(("id", "long")))
    status, raw = await api.call("GET", f"/schemas/ids/{schema_id}/schema")
    assert raw == rec(("id", "long"))
    assert (await api.call("GET", "/subjects"))[1].count(subject) == 1
    assert await api.call("GET", "/schemas/types") == (200, ["JSON", "AVRO"])
    assert await api.call("GET", "/") == (200, {})


async def test_same_schema_same_id_and_no_new_version(api: Api, subject: str) -> None:
    a = await api.ok_register(subject, rec(("id", "long")))
    # same schema, other whitespace / key order: same registration
    same = (
        '{"namespace": "com.acme", "name": "Order", "type": "record", '
        '"fields": [{"type": "long", "name": "id"}]}'
    )
    assert await api.ok_register(subject, same) == a
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [1])
    other = subject.replace("-value", "-key")
    assert await api.ok_register(other, rec(("id", "long"))) == a
    _, pairs = await api.call("GET", f"/schemas/ids/{a}/versions")
    assert {"subject": subject, "version": 1} in pairs
    assert {"subject": other, "version": 1} in pairs
    _, subjects = await api.call("GET", f"/schemas/ids/{a}/subjects")
    assert {subject, other} <= set(subjects)


async def test_lookup(api: Api, subject: str) -> None:
    schema_id = await api.ok_register(subject, rec(("id", "long")))
    status, body = await api.call(
        "POST", f"/subjects/{subject}", {"schema": json.dumps(rec(("id", "long")))}
    )
    assert status == 200
    assert (body["id"], body["version"], body["subject"]) == (schema_id, 1, subject)
    status, body = await api.call(
        "POST", f"/subjects/{subject}", {"schema": json.dumps(rec(("id", "int")))}
    )
    assert (status, body["error_code"]) == (404, 40403)
    status, body = await api.call(
        "POST", f"/subjects/{subject}-nope", {"schema": json.dumps(rec(("id", "int")))}
    )
    assert (status, body["error_code"]) == (404, 40401)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/subjects/{s}-missing/versions", 404, 40401),
        ("GET", "/subjects/{s}-missing/versions/1", 404, 40401),
        ("GET", "/subjects/{s}/versions/9", 404, 40402),
        ("GET", "/subjects/{s}/versions/abc", 422, 42202),
        ("GET", "/subjects/{s}/versions/0", 422, 42202),
        ("GET", "/schemas/ids/2147000000", 404, 40403),
        ("DELETE", "/subjects/{s}-missing", 404, 40401),
        ("GET", "/no/such/route", 404, 404),
        ("PATCH", "/subjects", 405, 405),
    ],
)
async def test_errors_are_confluent_bodies(
    api: Api, subject: str, method: str, path: str, status: int, code: int
) -> None:
    await api.ok_register(subject, rec(("id", "long")))
    got, body = await api.call(method, path.format(s=subject))
    assert (got, body["error_code"]) == (status, code), body
    assert isinstance(body["message"], str) and body["message"]


async def test_subject_not_found_message_names_it(api: Api, subject: str) -> None:
    _, body = await api.call("GET", f"/subjects/{subject}/versions")
    assert body == {"error_code": 40401, "message": f"Subject '{subject}' not found."}


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"schema": "{not json"}, 422, 42201, "not valid JSON"),
        ({"schema": '{"type": "record", "name": "X"}'}, 422, 42201, "'fields'"),
        ({"schema": '{"type": "objekt"}', "schemaType": "JSON"}, 422, 42201, "objekt"),
        ({"schema": "x", "schemaType": "PROTOBUF"}, 422, 42201, "PROTOBUF"),
        ({}, 422, 42201, "Empty schema"),
        ({"schema": '"string"', "references": [{"name": "x"}]}, 422, 42201, "references[0]"),
        (
            {
                "schema": '{"type":"record","name":"O","fields":[{"name":"a","type":"Addr"}]}',
                "references": [{"name": "Addr", "subject": "nope-nope", "version": 1}],
            },
            422,
            42201,
            "'nope-nope' version 1 is not registered",
        ),
    ],
)
async def test_invalid_schemas_are_42201(
    api: Api, subject: str, body: dict[str, Any], status: int, code: int, message: str
) -> None:
    got, out = await api.call("POST", f"/subjects/{subject}/versions", body)
    assert (got, out["error_code"]) == (status, code)
    assert message in out["message"]


async def test_malformed_body_is_400(api: Api, subject: str) -> None:
    async with api.session.post(f"{api.base}/subjects/{subject}/versions", data=b"{x") as resp:
        assert resp.status == 400
        assert (await resp.json(content_type=None))["error_code"] == 400


async def test_incompatible_registration_is_409_naming_the_problem(api: Api, subject: str) -> None:
    await api.ok_register(subject, rec(("id", "long")))
    status, body = await api.register(subject, rec(("id", "long"), ("email", "string")))
    assert (status, body["error_code"]) == (409, 409)
    assert "incompatible with an earlier schema" in body["message"]
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in body["message"]
    assert "'email'" in body["message"]
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [1])


async def test_compatibility_endpoint(api: Api, subject: str) -> None:
    await api.ok_register(subject, rec(("id", "long")))
    bad = {"schema": json.dumps(rec(("id", "long"), ("email", "string")))}
    good = {
        "schema": json.dumps(rec(("id", "long"), {"name": "e", "type": "string", "default": ""}))
    }
    path = f"/compatibility/subjects/{subject}/versions"
    assert await api.call("POST", path + "/latest", good) == (200, {"is_compatible": True})
    assert await api.call("POST", path + "/latest", bad) == (200, {"is_compatible": False})
    status, body = await api.call("POST", path + "/1", bad, verbose="true")
    assert body["is_compatible"] is False
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m for m in body["messages"])
    assert "{compatibility: 'BACKWARD'}" in body["messages"]
    assert (await api.call("POST", path, bad))[1] == {"is_compatible": False}
    status, body = await api.call("POST", path + "/7", bad)
    assert (status, body["error_code"]) == (404, 40402)
    status, body = await api.call("POST", f"/compatibility/subjects/{subject}x/versions", bad)
    assert body == {"is_compatible": True}  # nothing registered: anything goes


V1 = rec(("id", "long"))
V2 = rec(("id", "long"), {"name": "note", "type": "string", "default": ""})
V3 = rec(("id", "long"), ("note", "string"))
W1 = rec(("id", "long"), ("n", "int"))
W2 = rec(("id", "long"), {"name": "n", "type": "int", "default": 0})
W3 = rec(("id", "long"))

# level -> (history, must fail, must pass)
LEVELS: dict[str, tuple[list[Any], Any, Any]] = {
    "NONE": ([V1], '"string"', rec(("id", "string"))),
    "BACKWARD": ([V1], V3, V2),
    "BACKWARD_TRANSITIVE": (
        [V1, V2],
        V3,
        rec(("id", "long"), {"name": "x", "type": "int", "default": 1}),
    ),
    "FORWARD": ([W1], W3, rec(("id", "long"), ("n", "int"), ("z", "int"))),
    "FORWARD_TRANSITIVE": ([W1, W2], W3, rec(("id", "long"), ("n", "int"), ("z", "int"))),
    "FULL": ([V1], V3, V2),
    "FULL_TRANSITIVE": (
        [W1, W2],
        W3,
        rec(("id", "long"), ("n", "int"), {"name": "z", "type": "int", "default": 0}),
    ),
}


@pytest.mark.parametrize("level", list(LEVELS))
async def test_every_level_through_the_api(api: Api, subject: str, level: str) -> None:
    history, failing, passing = LEVELS[level]
    assert await api.call("PUT", f"/config/{subject}", {"compatibility": "NONE"}) == (
        200,
        {"compatibility": "NONE"},
    )
    for schema in history:
        await api.ok_register(subject, schema)
    assert (await api.call("PUT", f"/config/{subject}", {"compatibility": level}))[0] == 200
    assert await api.call("GET", f"/config/{subject}") == (200, {"compatibilityLevel": level})
    if level == "NONE":
        await api.ok_register(subject, failing)  # NONE accepts even a type change
    else:
        status, body = await api.register(subject, failing)
        assert status == 409, body
    await api.ok_register(subject, passing)


async def test_json_schema_registration_and_open_content_model(api: Api, subject: str) -> None:
    open_a = {"type": "object", "properties": {"a": {"type": "string"}}}
    open_ab = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    schema_id = await api.ok_register(subject, open_a, schemaType="JSON")
    status, body = await api.call("GET", f"/subjects/{subject}/versions/1")
    assert body["schemaType"] == "JSON"
    assert (await api.call("GET", f"/schemas/ids/{schema_id}"))[1]["schemaType"] == "JSON"
    status, body = await api.register(subject, open_ab, schemaType="JSON")
    assert status == 409 and "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL" in body["message"]
    closed_a = {**open_a, "additionalProperties": False}
    closed_ab = {**open_ab, "additionalProperties": False}
    other = subject + "-closed"
    await api.ok_register(other, closed_a, schemaType="JSON")
    await api.ok_register(other, closed_ab, schemaType="JSON")
    status, body = await api.register(other, {**closed_ab, "required": ["b"]}, schemaType="JSON")
    assert status == 409 and "REQUIRED_PROPERTY_ADDED" in body["message"]


async def test_config_endpoints(api: Api, subject: str) -> None:
    status, body = await api.call("GET", "/config")
    assert status == 200 and body["compatibilityLevel"] in (
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    )
    # global set to what it is (tests share the database): the PUT answer's shape
    assert await api.call("PUT", "/config", {"compatibility": body["compatibilityLevel"]}) == (
        200,
        {"compatibility": body["compatibilityLevel"]},
    )
    status, err = await api.call("PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, err["error_code"]) == (422, 42203)
    status, err = await api.call("GET", f"/config/{subject}")
    assert (status, err["error_code"]) == (404, 40408)
    assert await api.call("GET", f"/config/{subject}", defaultToGlobal="true") == (
        200,
        {"compatibilityLevel": body["compatibilityLevel"]},
    )
    await api.call("PUT", f"/config/{subject}", {"compatibility": "full"})
    assert await api.call("GET", f"/config/{subject}") == (200, {"compatibilityLevel": "FULL"})
    assert await api.call("DELETE", f"/config/{subject}") == (200, {"compatibilityLevel": "FULL"})
    assert (await api.call("GET", f"/config/{subject}"))[0] == 404


async def test_modes(api: Api, subject: str) -> None:
    status, body = await api.call("GET", "/mode")
    assert (status, body) == (200, {"mode": "READWRITE"})
    await api.ok_register(subject, V1)
    assert await api.call("PUT", f"/mode/{subject}", {"mode": "READONLY"}) == (
        200,
        {"mode": "READONLY"},
    )
    assert await api.call("GET", f"/mode/{subject}") == (200, {"mode": "READONLY"})
    status, body = await api.register(subject, V2)
    assert (status, body["error_code"]) == (422, 42205)
    status, body = await api.call("DELETE", f"/subjects/{subject}")
    assert (status, body["error_code"]) == (422, 42205)
    assert await api.call("DELETE", f"/mode/{subject}") == (200, {"mode": "READONLY"})
    await api.ok_register(subject, V2)
    status, body = await api.call("PUT", f"/mode/{subject}", {"mode": "IMPORT"})
    assert (status, body["error_code"]) == (422, 42205)  # subject has schemas: needs force
    status, body = await api.call("PUT", "/mode", {"mode": "SOMETIMES"})
    assert (status, body["error_code"]) == (422, 42204)
    status, body = await api.register(subject, V3, id=99, version=5)
    assert (status, body["error_code"]) == (422, 42205)  # ids only in IMPORT mode


async def test_import_mode_keeps_given_ids_and_the_sequence_moves_past(
    api: Api, subject: str
) -> None:
    assert await api.call("PUT", f"/mode/{subject}", {"mode": "IMPORT"}) == (
        200,
        {"mode": "IMPORT"},
    )
    wanted = 1_000_000 + uuid.uuid4().int % 1_000_000
    text = json.dumps(rec(("imported", "string"), name=f"I{uuid.uuid4().hex}"))
    assert await api.ok_register(subject, text, id=wanted, version=3) == wanted
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [3])
    status, body = await api.register(subject, rec(("other", "int")), id=wanted, version=4)
    assert (status, body["error_code"]) == (422, 42205)  # id taken by another schema
    await api.call("DELETE", f"/mode/{subject}")
    fresh = await api.ok_register(
        subject + "-after", rec(("x", "int"), name=f"N{uuid.uuid4().hex}")
    )
    assert fresh > wanted


async def test_soft_and_permanent_deletes(api: Api, subject: str) -> None:
    name = f"Del{uuid.uuid4().hex}"  # schemas of this test only, so ids are its own
    v1 = rec(("id", "long"), name=name)
    v2 = rec(("id", "long"), {"name": "note", "type": "string", "default": ""}, name=name)
    id1 = await api.ok_register(subject, v1)
    id2 = await api.ok_register(subject, v2)
    status, body = await api.call("DELETE", f"/subjects/{subject}/versions/1", permanent="true")
    assert (status, body["error_code"]) == (404, 40407)
    assert await api.call("DELETE", f"/subjects/{subject}/versions/1") == (200, 1)
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [2])
    assert await api.call("GET", f"/subjects/{subject}/versions", deleted="true") == (200, [1, 2])
    assert (await api.call("GET", f"/subjects/{subject}/versions/1"))[1]["error_code"] == 40402
    assert (await api.call("GET", f"/subjects/{subject}/versions/1", deleted="true"))[0] == 200
    assert (await api.call("GET", f"/schemas/ids/{id1}"))[0] == 200  # readers still decode
    status, body = await api.call("DELETE", f"/subjects/{subject}/versions/1")
    assert (status, body["error_code"]) == (404, 40406)
    assert await api.call("DELETE", f"/subjects/{subject}/versions/1", permanent="true") == (200, 1)
    status, body = await api.call("DELETE", f"/subjects/{subject}", permanent="true")
    assert (status, body["error_code"]) == (404, 40405)
    assert await api.call("DELETE", f"/subjects/{subject}") == (200, [2])
    assert subject not in (await api.call("GET", "/subjects"))[1]
    assert subject in (await api.call("GET", "/subjects", deleted="true"))[1]
    status, body = await api.call("DELETE", f"/subjects/{subject}")
    assert (status, body["error_code"]) == (404, 40404)
    assert await api.call("DELETE", f"/subjects/{subject}", permanent="true") == (200, [2])
    assert (await api.call("GET", f"/subjects/{subject}/versions", deleted="true"))[1][
        "error_code"
    ] == 40401
    assert (await api.call("GET", f"/schemas/ids/{id2}"))[1]["error_code"] == 40403
    # ids are never reused: a new schema gets a new id; the old schema its old one back
    new_id = await api.ok_register(subject, rec(("z", "int"), name=f"Z{uuid.uuid4().hex}"))
    assert new_id > id2
    await api.call("PUT", f"/config/{subject}", {"compatibility": "NONE"})
    assert await api.ok_register(subject, v2) == id2


async def test_references(api: Api, subject: str) -> None:
    addr_subject = subject + "-address"
    addr = {
        "type": "record",
        "name": "Address",
        "namespace": "com.acme",
        "fields": [{"name": "city", "type": "string"}],
    }
    addr_id = await api.ok_register(addr_subject, addr)
    order = rec(("id", "long"), ("ship_to", "com.acme.Address"))
    refs = [{"name": "com.acme.Address", "subject": addr_subject, "version": 1}]
    status, body = await api.register(subject, order)
    assert status == 422 and "com.acme.Address" in body["message"]
    order_id = await api.ok_register(subject, order, references=refs)
    assert order_id != addr_id
    status, body = await api.call("GET", f"/subjects/{subject}/versions/1")
    assert body["references"] == refs
    assert (await api.call("GET", f"/schemas/ids/{order_id}"))[1]["references"] == refs
    assert await api.call("GET", f"/subjects/{addr_subject}/versions/1/referencedby") == (
        200,
        [order_id],
    )
    status, body = await api.call("DELETE", f"/subjects/{addr_subject}/versions/1")
    assert (status, body["error_code"]) == (422, 42206)
    status, body = await api.call(
        "POST",
        f"/subjects/{subject}",
        {"schema": json.dumps(order), "references": refs},
    )
    assert (status, body["id"]) == (200, order_id)


async def test_json_references(api: Api, subject: str) -> None:
    addr = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    await api.ok_register(subject + "-addr", addr, schemaType="JSON")
    order = {"type": "object", "properties": {"to": {"$ref": "address.json"}}}
    refs = [{"name": "address.json", "subject": subject + "-addr", "version": 1}]
    await api.ok_register(subject, order, schemaType="JSON", references=refs)
    status, body = await api.register(subject + "-noref", order, schemaType="JSON")
    assert status == 422 and "address.json" in body["message"]


async def test_concurrent_registrations_get_one_id(api: Api, subject: str) -> None:
    schema = rec(("id", "long"), name=f"C{uuid.uuid4().hex}")
    same_subject = await asyncio.gather(*(api.register(subject, schema) for _ in range(12)))
    assert {s for s, _ in same_subject} == {200}
    ids = {b["id"] for _, b in same_subject}
    assert len(ids) == 1
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, [1])
    other = rec(("id", "long"), name=f"D{uuid.uuid4().hex}")
    across = await asyncio.gather(*(api.register(f"{subject}-{i}", other) for i in range(10)))
    assert len({b["id"] for _, b in across}) == 1
    assert ids.isdisjoint({b["id"] for _, b in across})


async def test_concurrent_different_schemas_get_distinct_versions(api: Api, subject: str) -> None:
    await api.call("PUT", f"/config/{subject}", {"compatibility": "NONE"})
    schemas = [rec((f"f{i}", "int"), name=f"S{uuid.uuid4().hex}") for i in range(8)]
    results = await asyncio.gather(*(api.register(subject, s) for s in schemas))
    assert {s for s, _ in results} == {200}
    assert len({b["id"] for _, b in results}) == 8
    assert await api.call("GET", f"/subjects/{subject}/versions") == (200, list(range(1, 9)))


async def test_subject_listing_filters(api: Api, subject: str) -> None:
    await api.ok_register(subject, V1)
    await api.ok_register(subject + "-b", V1)
    _, names = await api.call("GET", "/subjects", subjectPrefix=subject)
    assert names == [subject, subject + "-b"]
    assert await api.call("GET", "/subjects", subjectPrefix=subject, limit="1") == (200, [subject])
    await api.call("DELETE", f"/subjects/{subject}-b")
    assert await api.call("GET", "/subjects", subjectPrefix=subject, deletedOnly="true") == (
        200,
        [subject + "-b"],
    )
