"""The snapshot window (which chunk rows a log change supersedes) and the stall alarm."""

from __future__ import annotations

from eventpipe.connectors.postgres_cdc.heartbeat import StallDetector
from eventpipe.connectors.postgres_cdc.snapshot import Chunk, MvccSnapshot, xid_precedes


def chunk(snapshot: str) -> Chunk:
    return Chunk(
        task_id=1,
        table="public.t",
        snapshot=MvccSnapshot.parse(snapshot),
        names=["id", "v"],
        type_oids=[23, 23],
        rows={(i,): {"id": i, "v": 0} for i in range(1, 6)},
        last_key=["5"],
        done=False,
        read_at_ms=0,
    )


def test_snapshot_visibility() -> None:
    s = MvccSnapshot.parse("100:105:101,103")
    assert s.visible(99)  # committed before the oldest running transaction
    assert s.visible(100) and s.visible(102) and s.visible(104)
    assert not s.visible(101) and not s.visible(103)  # in progress when read
    assert not s.visible(105) and not s.visible(200)  # started after
    assert s.sees_all([50, 102]) and not s.sees_all([50, 101])
    # 64-bit xids with an epoch compare on their low 32 bits, as pgoutput sends them
    e = MvccSnapshot.parse(f"{(1 << 32) + 10}:{(1 << 32) + 12}:")
    assert e.visible(11) and not e.visible(12)


def test_xid_order_wraps_around() -> None:
    assert xid_precedes(5, 6) and not xid_precedes(6, 5) and not xid_precedes(5, 5)
    assert xid_precedes(0xFFFFFFF0, 3)  # 3 came after the wraparound


def test_changes_by_unseen_transactions_drop_chunk_rows() -> None:
    c = chunk("100:105:103")
    c.on_change(102, [(1,)])  # seen by the chunk's read: the row already reflects it
    assert (1,) in c.rows
    c.on_change(103, [(2,), (9,)])  # in progress at the read: newer than the row
    c.on_change(107, [(3,)])  # started after the read
    assert set(c.rows) == {(1,), (4,), (5,)} and c.dropped == 2
    c.on_truncate(90)  # seen: nothing
    assert len(c.rows) == 3
    c.on_truncate(110)
    assert not c.rows and c.dropped == 5


def test_stall_detector() -> None:
    d = StallDetector(timeout_s=10)
    assert not d.observe(0, 1000, 0)
    assert not d.observe(5, 1000, 500)  # lagging, but not for long
    assert d.observe(10.5, 1000, 800)  # no progress for 10.5 s while WAL waits
    assert "has not advanced" in d.reason
    assert not d.observe(11, 1200, 100)  # it moved
    assert not d.observe(30, 1200, 0)  # idle and caught up: no alarm however long
    assert not d.observe(45, None, None)  # no slot
