"""The registry: nodes, passwords, halts, intervals, and the node list in one query."""
import pytest

from tswarm.storage import NodeExists, NodeNotFound, NodeStatus

from .conftest import add_nodes


def test_add_remove_and_add_again(storage):
    storage.add_node("a", "h1")
    with pytest.raises(NodeExists):
        storage.add_node("a", "h2")
    assert storage.node_auth("a").password_hash == "h1"
    storage.remove_node("a")
    assert storage.node_auth("a") is None and not storage.is_registered("a")
    with pytest.raises(NodeNotFound):
        storage.remove_node("a")
    storage.add_node("a", "h3")
    auth = storage.node_auth("a")
    assert auth.password_hash == "h3" and not auth.created


def test_a_node_added_again_after_removal_starts_afresh_but_keeps_its_id(storage):
    (a,) = add_nodes(storage, "a")
    storage.mark_created("a", 5)
    storage.set_halt("a", True)
    storage.remove_node("a")
    storage.add_node("a", "h2")
    auth = storage.node_auth("a")
    assert (auth.id, auth.created, auth.halted) == (a, False, False)


def test_registered_now_or_ever(storage):
    add_nodes(storage, "kept", "gone")
    storage.remove_node("gone")
    assert [storage.is_registered(n) for n in ("kept", "gone", "never")] == [True, False, False]
    assert [storage.ever_registered(n) for n in ("kept", "gone", "never")] == [True, True, False]


def test_set_password_only_for_a_registered_node(storage):
    add_nodes(storage, "a", "gone")
    storage.set_password("a", "h2")
    assert storage.node_auth("a").password_hash == "h2"
    storage.remove_node("gone")
    for name in ("gone", "never"):
        with pytest.raises(NodeNotFound):
            storage.set_password(name, "h")


def test_halt_one_node_or_all(storage):
    add_nodes(storage, "a", "b")
    storage.set_halt("a", True)
    assert storage.node_auth("a").halted and not storage.node_auth("b").halted
    storage.set_halt(None, True)
    assert storage.node_auth("b").halted and storage.halted_all()
    storage.set_halt(None, False)
    storage.set_halt("a", False)
    assert not storage.node_auth("a").halted and not storage.node_auth("b").halted
    with pytest.raises(NodeNotFound):
        storage.set_halt("nope", True)


def test_mark_created_keeps_the_first_time(storage):
    add_nodes(storage, "a")
    assert not storage.node_auth("a").created
    storage.mark_created("a", 5)
    storage.mark_created("a", 9)
    assert storage.node_auth("a").created and storage.list_nodes()[0].created_at == 5
    with pytest.raises(NodeNotFound):
        storage.mark_created("never", 1)


def test_set_interval(storage):
    add_nodes(storage, "a")
    storage.set_interval("a", 900)
    assert storage.list_nodes()[0].interval_s == 900
    with pytest.raises(NodeNotFound):
        storage.set_interval("never", 60)


def test_list_nodes_gives_each_registered_node_its_newest_reading(storage):
    """The same as the node-by-node loop it replaced: removed nodes hidden, their readings kept out of
    the others' rows, a halted node's own flag (halt-all does not show here), None for no reading."""
    add_nodes(storage, "porch", "attic", "gone", "quiet")
    storage.mark_created("porch", 7)
    storage.add_readings([
        ("porch", 10, 20.0, 50.0), ("attic", 11, 18.0, 40.0), ("porch", 30, 21.0, 51.0),
        ("gone", 40, 1.0, 1.0), ("attic", 25, 19.0, 41.0),
    ])
    storage.set_halt("attic", True)
    storage.set_halt(None, True)
    storage.set_interval("quiet", 3600)
    storage.remove_node("gone")
    nodes = storage.list_nodes()
    registered = {n.name: n.registered_at for n in nodes}
    assert nodes == [
        NodeStatus("attic", registered["attic"], None, True, 300, 25, 19.0, 41.0),
        NodeStatus("porch", registered["porch"], 7, False, 300, 30, 21.0, 51.0),
        NodeStatus("quiet", registered["quiet"], None, False, 3600, None, None, None),
    ]


def test_list_nodes_is_one_query_that_looks_up_readings_by_index(sqlite_storage):
    """SQLite: the newest reading of each node is found in readings_node_ts, never by scanning readings."""
    from tswarm.storage.sqlite.registry import LIST_NODES

    plan = [row[3] for row in sqlite_storage.conn.execute("EXPLAIN QUERY PLAN " + LIST_NODES)]
    assert any("USING COVERING INDEX readings_node_ts (node_id=?)" in step for step in plan), plan
    assert [step for step in plan if step.startswith("SCAN")] == ["SCAN nodes USING INDEX sqlite_autoindex_nodes_1"], plan


def test_list_nodes_runs_one_statement(sqlite_storage):
    add_nodes(sqlite_storage, *(f"n{i}" for i in range(20)))
    sqlite_storage.add_readings([(f"n{i}", 100 + i, 20.0, 50.0) for i in range(20)])
    statements = []
    sqlite_storage.conn.set_trace_callback(statements.append)
    assert len(sqlite_storage.list_nodes()) == 20
    sqlite_storage.conn.set_trace_callback(None)
    assert len(statements) == 1


def test_node_names_keep_removed_nodes_and_number_unknown_ids(storage):
    a, gone = add_nodes(storage, "a", "gone")
    storage.remove_node("gone")
    names = storage.node_names()
    assert (names[a], names[gone], names[999]) == ("a", "gone", "#999")
