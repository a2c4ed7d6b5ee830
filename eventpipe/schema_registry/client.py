"""An async client for any Confluent-compatible registry: eventpipe's own
(``http://host:8080/schema-registry``), Confluent's or Karapace's.

    async with SchemaRegistryClient("http://127.0.0.1:8081") as sr:
        schema_id = await sr.register("orders-value", avro_text)          # AVRO default
        schema = await sr.get_by_id(schema_id)                            # cached
        latest = await sr.get_latest("orders-value")
        found = await sr.lookup("orders-value", avro_text)

Ids, id -> schema and (subject, schema) -> id / registration are cached (LRU):
they never change once the registry handed them out.  An error answer raises
:class:`RegistryClientError` with the registry's ``status``, ``error_code`` and
``message``; an unreachable registry :class:`RegistryUnavailableError` (retriable).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .errors import RegistryClientError, RegistryUnavailableError
from .models import (
    AVRO,
    CONTENT_TYPE,
    CompatibilityResult,
    RegisteredSchema,
    Schema,
    SchemaReference,
)
from .schemas import ParsedSchema, ResolvedReference, parse

ACCEPT = f"{CONTENT_TYPE}, application/vnd.schemaregistry+json, application/json"
Version = int | Literal["latest"]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def drop_where(self, predicate: Callable[[K], bool]) -> None:
        for key in [k for k in self._items if predicate(k)]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


def as_schema(
    schema: str | Schema, schema_type: str = AVRO, references: Iterable[SchemaReference] = ()
) -> Schema:
    if isinstance(schema, Schema):
        return schema
    return Schema(schema, schema_type.upper(), tuple(references))


def _split_auth(url: str) -> tuple[str, aiohttp.BasicAuth | None]:
    u = URL(url)
    if u.user is None:
        return url.rstrip("/"), None
    auth = aiohttp.BasicAuth(u.user, u.password or "")
    return str(u.with_user(None)).rstrip("/"), auth


def _q(subject: str) -> str:
    return quote(subject, safe="")


class SchemaRegistryClient:
    """``url`` is the registry's base URL (user:password@ in it, or ``auth``, for
    basic auth).  Pass ``session`` to share an ``aiohttp.ClientSession``; otherwise the
    client opens one and :meth:`close` closes it."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        cache_capacity: int = 1000,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url, url_auth = _split_auth(url)
        self._auth = aiohttp.BasicAuth(*auth) if auth else url_auth
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Accept": ACCEPT, **(headers or {})}
        self._ids: LRU[tuple[str, str, str, tuple[SchemaReference, ...]], int] = LRU(cache_capacity)
        self._schemas: LRU[int, Schema] = LRU(cache_capacity)
        self._versions: LRU[tuple[str, int], RegisteredSchema] = LRU(cache_capacity)
        self._lookups: LRU[tuple[str, Schema, bool], RegisteredSchema] = LRU(cache_capacity)
        self._parsed: LRU[int, ParsedSchema] = LRU(cache_capacity)
        self.requests = 0  # HTTP requests sent, for tests and metrics

    async def __aenter__(self) -> SchemaRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._own_session:
            await session.close()

    def clear_caches(self) -> None:
        for cache in (self._ids, self._schemas, self._versions, self._lookups, self._parsed):
            cache.clear()

    # ------------------------------------------------------------------ HTTP

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        if self._session is None:
            if not self._own_session:
                raise RegistryUnavailableError("the client's session was closed")
            self._session = aiohttp.ClientSession()
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = CONTENT_TYPE
        url = URL(f"{self.url}/{path}", encoded=True)
        self.requests += 1
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                auth=self._auth,
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise RegistryUnavailableError(
                f"schema registry {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise RegistryUnavailableError(f"schema registry {self.url}: {exc}") from exc
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        if status >= 400:
            if isinstance(payload, dict):
                code = payload.get("error_code", status)
                message = (
                    payload.get("message") or payload.get("detail") or raw.decode(errors="replace")
                )
            else:
                code, message = status, raw.decode(errors="replace")[:500] or f"HTTP {status}"
            raise RegistryClientError(
                status, int(code) if str(code).isdigit() else status, str(message)
            )
        if payload is None and raw:
            raise RegistryClientError(status, -1, f"not a JSON answer: {raw[:200]!r}")
        return payload

    # ------------------------------------------------------------- schemas

    async def register(
        self,
        subject: str,
        schema: str | Schema,
        schema_type: str = AVRO,
        references: Iterable[SchemaReference] = (),
        *,
        normalize: bool = False,
    ) -> int:
        """Register (or find) ``schema`` under ``subject``; returns its global id."""
        s = as_schema(schema, schema_type, references)
        key = (subject, s.schema_type, s.schema, s.references)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        out = await self._request(
            "POST",
            f"subjects/{_q(subject)}/versions",
            body=s.to_dict(),
            params={"normalize": "true"} if normalize else None,
        )
        schema_id = int(out["id"])
        self._ids.put(key, schema_id)
        if self._schemas.get(schema_id) is None:
            self._schemas.put(schema_id, s)
        return schema_id

    async def get_by_id(self, schema_id: int) -> Schema:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        out = await self._request("GET", f"schemas/ids/{int(schema_id)}")
        schema = Schema.from_dict(out)
        self._schemas.put(schema_id, schema)
        return schema

    async def get_version(self, subject: str, version: Version = "latest") -> RegisteredSchema:
        """A version of ``subject``; numbered versions are cached, ``latest`` is not."""
        if version != "latest":
            cached = self._versions.get((subject, int(version)))
            if cached is not None:
                return cached
        out = await self._request("GET", f"subjects/{_q(subject)}/versions/{version}")
        out.setdefault("subject", subject)
        reg = RegisteredSchema.from_dict(out)
        self._versions.put((subject, reg.version), reg)
        if self._schemas.get(reg.id) is None:
            self._schemas.put(reg.id, reg.schema)
        return reg

    async def get_latest(self, subject: str) -> RegisteredSchema:
        return await self.get_version(subject, "latest")

    async def lookup(
        self,
        subject: str,
        schema: str | Schema,
        schema_type: str = AVRO,
        references: Iterable[SchemaReference] = (),
        *,
        deleted: bool = False,
    ) -> RegisteredSchema:
        """The registration of ``schema`` in ``subject`` (404 error when it has none)."""
        s = as_schema(schema, schema_type, references)
        key = (subject, s, deleted)
        cached = self._lookups.get(key)
        if cached is not None:
            return cached
        out = await self._request(
            "POST",
            f"subjects/{_q(subject)}",
            body=s.to_dict(),
            params={"deleted": "true"} if deleted else None,
        )
        out.setdefault("subject", subject)
        reg = RegisteredSchema.from_dict(out)
        self._lookups.put(key, reg)
        self._ids.put((subject, s.schema_type, s.schema, s.references), reg.id)
        return reg

    async def subjects(self, *, deleted: bool = False, prefix: str | None = None) -> list[str]:
        params = {"deleted": "true"} if deleted else {}
        if prefix:
            params["subjectPrefix"] = prefix
        return list(await self._request("GET", "subjects", params=params or None))

    async def versions(self, subject: str, *, deleted: bool = False) -> list[int]:
        return [
            int(v)
            for v in await self._request(
                "GET",
                f"subjects/{_q(subject)}/versions",
                params={"deleted": "true"} if deleted else None,
            )
        ]

    async def schema_versions(self, schema_id: int) -> list[tuple[str, int]]:
        out = await self._request("GET", f"schemas/ids/{int(schema_id)}/versions")
        return [(d["subject"], int(d["version"])) for d in out]

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        out = await self._request(
            "DELETE",
            f"subjects/{_q(subject)}",
            params={"permanent": "true"} if permanent else None,
        )
        self._forget(subject)
        return [int(v) for v in out]

    async def delete_version(
        self, subject: str, version: Version, *, permanent: bool = False
    ) -> int:
        out = await self._request(
            "DELETE",
            f"subjects/{_q(subject)}/versions/{version}",
            params={"permanent": "true"} if permanent else None,
        )
        self._forget(subject)
        return int(out)

    def _forget(self, subject: str) -> None:
        self._versions.drop_where(lambda k: k[0] == subject)
        self._lookups.drop_where(lambda k: k[0] == subject)
        self._ids.drop_where(lambda k: k[0] == subject)

    async def check_compatibility(
        self,
        subject: str,
        schema: str | Schema,
        schema_type: str = AVRO,
        references: Iterable[SchemaReference] = (),
        *,
        version: Version | None = "latest",
    ) -> CompatibilityResult:
        """Would ``schema`` be compatible?  ``version=None`` checks against every
        version the subject's level names (transitive levels: all)."""
        s = as_schema(schema, schema_type, references)
        path = f"compatibility/subjects/{_q(subject)}/versions"
        if version is not None:
            path += f"/{version}"
        out = await self._request("POST", path, body=s.to_dict(), params={"verbose": "true"})
        return CompatibilityResult(
            bool(out["is_compatible"]), tuple(str(m) for m in out.get("messages") or ())
        )

    async def schema_types(self) -> list[str]:
        return list(await self._request("GET", "schemas/types"))

    # --------------------------------------------------------- config, mode

    async def get_compatibility(self, subject: str | None = None) -> str:
        """The level in force: the subject's own, else the global one."""
        if subject is None:
            out = await self._request("GET", "config")
        else:
            out = await self._request(
                "GET", f"config/{_q(subject)}", params={"defaultToGlobal": "true"}
            )
        return str(out["compatibilityLevel"])

    async def set_compatibility(self, level: str, subject: str | None = None) -> str:
        path = "config" if subject is None else f"config/{_q(subject)}"
        out = await self._request("PUT", path, body={"compatibility": level.upper()})
        return str(out["compatibility"])

    async def delete_compatibility(self, subject: str | None = None) -> str:
        path = "config" if subject is None else f"config/{_q(subject)}"
        out = await self._request("DELETE", path)
        return str(out.get("compatibilityLevel") or out.get("compatibility"))

    async def get_mode(self, subject: str | None = None) -> str:
        if subject is None:
            out = await self._request("GET", "mode")
        else:
            out = await self._request(
                "GET", f"mode/{_q(subject)}", params={"defaultToGlobal": "true"}
            )
        return str(out["mode"])

    async def set_mode(self, mode: str, subject: str | None = None, *, force: bool = False) -> str:
        path = "mode" if subject is None else f"mode/{_q(subject)}"
        out = await self._request(
            "PUT", path, body={"mode": mode.upper()}, params={"force": "true"} if force else None
        )
        return str(out["mode"])

    # ------------------------------------------------------------- parsing

    async def resolve_references(
        self, references: Sequence[SchemaReference], _depth: int = 0
    ) -> tuple[ResolvedReference, ...]:
        """Fetch and parse what ``references`` name (recursively), dependencies first."""
        if _depth > 32:
            raise RegistryClientError(422, 42201, "references nest deeper than 32 levels")
        out: list[ResolvedReference] = []
        for ref in references:
            reg = await self.get_version(ref.subject, ref.version if ref.version > 0 else "latest")
            parsed = await self._parse_registered(reg.id, reg.schema, _depth + 1)
            out.append(
                ResolvedReference(SchemaReference(ref.name, ref.subject, reg.version), parsed)
            )
        return tuple(out)

    async def _parse_registered(self, schema_id: int, schema: Schema, depth: int) -> ParsedSchema:
        cached = self._parsed.get(schema_id)
        if cached is not None:
            return cached
        refs = await self.resolve_references(schema.references, depth)
        parsed = parse(schema.schema_type, schema.schema, refs)
        self._parsed.put(schema_id, parsed)
        return parsed

    async def get_parsed(self, schema_id: int) -> ParsedSchema:
        """The schema with ``schema_id``, parsed with its references (cached)."""
        cached = self._parsed.get(schema_id)
        if cached is not None:
            return cached
        return await self._parse_registered(schema_id, await self.get_by_id(schema_id), 0)

    async def parse(self, schema: Schema) -> ParsedSchema:
        """Parse a schema of ours, fetching the schemas its references name."""
        return parse(
            schema.schema_type, schema.schema, await self.resolve_references(schema.references)
        )


def schema_resolver(
    url: str, *, timeout_s: float = 10.0
) -> Callable[[str, Version], tuple[str, str]]:
    """A blocking ``(subject, version) -> (schema_type, schema_text)`` callable, for
    code that loads configuration outside the event loop (or through
    ``asyncio.to_thread``), e.g. the transforms' ``validate`` step."""
    base, auth = _split_auth(url)
    headers = {"Accept": ACCEPT}
    if auth is not None:
        headers["Authorization"] = auth.encode()

    def resolve(subject: str, version: Version) -> tuple[str, str]:
        req = urllib.request.Request(
            f"{base}/subjects/{_q(subject)}/versions/{version}", headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                out = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = orjson.loads(exc.read())
                code, message = int(body.get("error_code", exc.code)), str(body.get("message"))
            except (orjson.JSONDecodeError, ValueError, AttributeError):
                code, message = exc.code, str(exc)
            raise RegistryClientError(exc.code, code, message) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise RegistryUnavailableError(f"schema registry {base} unreachable: {exc}") from exc
        return str(out.get("schemaType") or AVRO), str(out["schema"])

    return resolve
