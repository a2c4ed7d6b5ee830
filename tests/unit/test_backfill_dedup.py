"""The in-memory dedup table of a backfill run holds at most its limit of keys."""

from __future__ import annotations

from eventpipe.backfill.modes import RunDedup


def test_the_oldest_keys_are_forgotten_beyond_the_limit() -> None:
    now = [1000.0]
    d = RunDedup(3600, limit=3)
    d.clock = lambda: now[0]
    for k in "abcd":
        d.mark(k, 0)
    assert len(d.table) == 3
    assert not d.seen("a") and all(d.seen(k) for k in "bcd")
    d.mark("b", 0)  # seen again: the newest now
    d.mark("e", 0)
    assert sorted(d.table) == ["b", "d", "e"]
    now[0] += 3601  # and the time window still applies
    assert not d.seen("e")
    assert d.expire({0: None}) == 0
