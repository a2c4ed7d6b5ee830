from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from eventpipe.db.migrations import Migration, MigrationError, apply_migrations, discover
from tests.fixtures.stack import StackInfo


def test_discovered_in_order() -> None:
    ms = discover()
    assert ms and ms[0].version == 1
    assert [m.version for m in ms] == sorted(m.version for m in ms)


async def test_applied_once_and_safe_to_run_twice(stack: StackInfo) -> None:
    # The session fixture applied them already: nothing more to do.
    assert await apply_migrations(stack.database_url) == []
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute("select version from eventpipe.schema_migrations order by 1")
        assert [r[0] for r in await cur.fetchall()] == [m.version for m in discover()]


async def test_two_processes_at_once_apply_each_migration_once(stack: StackInfo) -> None:
    table = f"mig_{uuid.uuid4().hex[:8]}"
    extra = [
        *discover(),
        Migration(
            9000 + int(uuid.uuid4().int % 900),
            "probe",
            f"create table eventpipe.{table} (x int); insert into eventpipe.{table} values (1);",
        ),
    ]
    results = await asyncio.gather(
        apply_migrations(stack.database_url, extra), apply_migrations(stack.database_url, extra)
    )
    assert sorted(len(r) for r in results) == [0, 1]
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute(f"select count(*) from eventpipe.{table}")
        assert (await cur.fetchone()) == (1,)
        await conn.execute(f"drop table eventpipe.{table}")
        await conn.execute(
            "delete from eventpipe.schema_migrations where version = %s", (extra[-1].version,)
        )
        await conn.commit()


async def test_edited_applied_migration_is_refused(stack: StackInfo) -> None:
    first = discover()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(stack.database_url, [edited])


async def test_failed_migration_is_not_half_applied(stack: StackInfo) -> None:
    table = f"mig_{uuid.uuid4().hex[:8]}"
    version = 8000 + int(uuid.uuid4().int % 900)
    bad = Migration(version, "bad", f"create table eventpipe.{table} (x int); select 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        await apply_migrations(stack.database_url, [*discover(), bad])
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute("select to_regclass(%s)", (f"eventpipe.{table}",))
        assert (await cur.fetchone()) == (None,)
        cur = await conn.execute(
            "select count(*) from eventpipe.schema_migrations where version = %s", (version,)
        )
        assert (await cur.fetchone()) == (0,)
