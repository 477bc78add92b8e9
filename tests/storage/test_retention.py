"""Retention: pruning old readings, and the horizon below which the journal is incomplete."""
from .conftest import add_nodes

T0 = 1_700_000_000 * 10**9
NS = 10**9


def test_pruning_moves_the_horizon_past_the_newest_reading_deleted_and_never_back(storage):
    add_nodes(storage, "a", "b")
    storage.add_readings([("ab"[i % 2], T0 + i * NS, 20.0, 50.0) for i in range(10)])
    assert storage.pruned_before() is None  # never pruned: the journal is complete
    assert storage.prune_readings(T0 + 4 * NS + 1) == 5
    assert storage.pruned_before() == T0 + 4 * NS + 1
    assert storage.prune_readings(T0 + 2 * NS) == 0  # nothing older left: the horizon stays
    assert storage.pruned_before() == T0 + 4 * NS + 1
    # Only forwarded readings go (ids 6 and 7 are, 8 and later are not): the horizon follows what went.
    assert storage.prune_readings(T0 + 9 * NS, up_to_id=7) == 2
    assert storage.pruned_before() == T0 + 6 * NS + 1


def test_pruning_goes_chunk_by_chunk_and_keeps_the_newer_readings(storage):
    add_nodes(storage, "a")
    storage.add_readings([("a", ts, 1.0, 1.0) for ts in range(1, 26)])
    assert storage.prune_readings(21, chunk=3) == 20
    assert [r[0] for b in storage.iter_readings() for r in b] == [21, 22, 23, 24, 25]
    assert storage.pruned_before() == 21
