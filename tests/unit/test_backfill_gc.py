"""While a backfill's lanes run, what existed before is left out of the cyclic
collector's work; afterwards the process is as it was."""

from __future__ import annotations

import gc

import pytest

from eventpipe.loop import frozen_heap


@pytest.fixture(autouse=True)
def _unfrozen() -> None:
    """Start from a heap nothing froze (a service started by an earlier test in this
    process froze its own)."""
    gc.unfreeze()


def test_lanes_run_with_the_heap_frozen_and_unfreeze_it() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 0  # what existed is left out of collections
    assert gc.get_freeze_count() == 0


def test_unfrozen_when_the_lanes_fail() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("a lane failed")
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_someone_else_stays_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.freeze()
    calls: list[str] = []
    try:
        for name in ("freeze", "unfreeze", "collect"):
            real = getattr(gc, name)
            monkeypatch.setattr(
                gc, name, lambda *a, _n=name, _r=real: (calls.append(_n), _r(*a))[1]
            )
        with frozen_heap():
            pass
        monkeypatch.undo()
        assert calls == []  # left as it was: neither collected, frozen again nor unfrozen
        assert gc.get_freeze_count() > 0
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_garbage_cycles_are_still_collected() -> None:
    class Node:
        ref: object = None

    with frozen_heap():
        a, b = Node(), Node()
        a.ref, b.ref = b, a
        del a, b
        assert gc.collect() >= 2
