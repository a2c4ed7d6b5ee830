"""Decoder for the ``pgoutput`` logical replication protocol, version 1.

Every message PostgreSQL's built-in plugin sends (protocol docs, "Logical
Replication Message Formats"): Begin, Commit, Origin, Relation, Type, Insert,
Update, Delete, Truncate and Message.  Column values stay raw bytes here
(``None`` for NULL, :data:`UNCHANGED` for an unchanged TOASTed value); turning
them into JSON values by type is :mod:`.types`' job.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from eventpipe.errors import PermanentError

PG_EPOCH_UNIX_US: Final = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_I16 = struct.Struct(">h").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I64 = struct.Struct(">q").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_MESSAGE_HEAD = struct.Struct(">BQ").unpack_from


class Unchanged:
    """An unchanged TOASTed value: PostgreSQL did not send it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()
RawValue = bytes | None | Unchanged


class ProtocolError(PermanentError):
    """Bytes that are not a pgoutput message we understand."""


def pg_time(us_since_2000: int) -> datetime:
    return _PG_EPOCH + timedelta(microseconds=us_since_2000)


def unix_ms(us_since_2000: int) -> int:
    return (us_since_2000 + PG_EPOCH_UNIX_US) // 1000


# ----------------------------------------------------------------- messages
@dataclass(slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: with the position, the event id
    commit_ts: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: where the slot may advance to
    commit_ts: int


@dataclass(slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    key: bool  # part of the replica identity


@dataclass(slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replident: str  # d default, n nothing, f full, i index
    columns: list[Column] = field(default_factory=list)


@dataclass(slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    relation: int
    new: list[RawValue]


@dataclass(slots=True)
class Update:
    relation: int
    old_kind: str | None  # 'K' key only, 'O' whole old row, None not sent
    old: list[RawValue] | None
    new: list[RawValue]


@dataclass(slots=True)
class Delete:
    relation: int
    old_kind: str  # 'K' or 'O'
    old: list[RawValue]


@dataclass(slots=True)
class Truncate:
    options: int  # 1 cascade, 2 restart identity
    relations: list[int]


@dataclass(slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Decoded = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message


# ------------------------------------------------------------------ helpers
def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def read_tuple(buf: bytes, pos: int) -> tuple[list[RawValue], int]:
    """TupleData at ``pos`` -> (values, position after it)."""
    (n,) = _I16(buf, pos)
    pos += 2
    out: list[RawValue] = []
    append = out.append
    for _ in range(n):
        kind = buf[pos]
        pos += 1
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            (length,) = _I32(buf, pos)
            pos += 4
            append(buf[pos : pos + length])
            pos += length
        elif kind == 110:  # 'n'
            append(None)
        elif kind == 117:  # 'u'
            append(UNCHANGED)
        else:
            raise ProtocolError(f"unknown tuple value kind {chr(kind)!r} at byte {pos - 1}")
    return out, pos


# ------------------------------------------------------------------ decoders
def _begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN(buf, 1)
    return Begin(final_lsn, ts, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, ts = _COMMIT(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, ts)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _U64(buf, 1)
    name, _ = _cstring(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (oid,) = _U32(buf, 1)
    nsp, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    replident = chr(buf[pos])
    (ncols,) = _I16(buf, pos + 1)
    pos += 3
    rel = Relation(oid, nsp, name, replident)
    for _ in range(ncols):
        flags = buf[pos]
        col, pos = _cstring(buf, pos + 1)
        (typ,) = _U32(buf, pos)
        (typmod,) = _I32(buf, pos + 4)
        pos += 8
        rel.columns.append(Column(col, typ, typmod, bool(flags & 1)))
    return rel


def _type(buf: bytes) -> Type:
    (oid,) = _U32(buf, 1)
    nsp, pos = _cstring(buf, 5)
    name, _ = _cstring(buf, pos)
    return Type(oid, nsp, name)


def _insert(buf: bytes) -> Insert:
    (rel,) = _U32(buf, 1)
    if buf[5] != 78:  # 'N'
        raise ProtocolError(f"insert: expected 'N', got {chr(buf[5])!r}")
    new, _ = read_tuple(buf, 6)
    return Insert(rel, new)


def _update(buf: bytes) -> Update:
    (rel,) = _U32(buf, 1)
    kind = buf[5]
    old: list[RawValue] | None = None
    old_kind: str | None = None
    pos = 6
    if kind in (75, 79):  # 'K', 'O'
        old_kind = chr(kind)
        old, pos = read_tuple(buf, 6)
        kind = buf[pos]
        pos += 1
    if kind != 78:
        raise ProtocolError(f"update: expected 'N', got {chr(kind)!r}")
    new, _ = read_tuple(buf, pos)
    return Update(rel, old_kind, old, new)


def _delete(buf: bytes) -> Delete:
    (rel,) = _U32(buf, 1)
    kind = buf[5]
    if kind not in (75, 79):
        raise ProtocolError(f"delete: expected 'K' or 'O', got {chr(kind)!r}")
    old, _ = read_tuple(buf, 6)
    return Delete(rel, chr(kind), old)


def _truncate(buf: bytes) -> Truncate:
    (n,) = _I32(buf, 1)
    options = buf[5]
    rels = list(struct.unpack_from(f">{n}I", buf, 6))
    return Truncate(options, rels)


def _message(buf: bytes) -> Message:
    flags, lsn = _MESSAGE_HEAD(buf, 1)
    prefix, pos = _cstring(buf, 10)
    (length,) = _I32(buf, pos)
    pos += 4
    return Message(bool(flags & 1), lsn, prefix, buf[pos : pos + length])


_DECODERS: dict[int, Callable[[bytes], Decoded]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}


def decode(buf: bytes) -> Decoded:
    """One pgoutput message -> its dataclass.  Raises :class:`ProtocolError`."""
    if not buf:
        raise ProtocolError("empty pgoutput message")
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise ProtocolError(
            f"unsupported pgoutput message {chr(buf[0])!r}; the slot must be read with "
            "proto_version 1"
        )
    try:
        return decoder(buf)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"truncated or malformed {chr(buf[0])!r} message: {exc}") from exc
