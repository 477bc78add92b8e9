"""service/errors.py: every error an app route raises becomes a JSON answer."""
import pytest

from tswarm.storage import StorageUnavailable
from tswarm.storage.sqlite import SqliteStorage


@pytest.mark.parametrize("path", ["/api/nodes", "/api/nodes/kitchen"])
async def test_a_reader_route_whose_storage_is_away_answers_503_with_retry_after(make_client, monkeypatch, path):
    """The database away (PostgreSQL restarting, a failover) is a 503 to retry, not a 500."""

    def away(self, *args):
        raise StorageUnavailable("cannot reach the database")

    monkeypatch.setattr(SqliteStorage, "list_nodes", away)
    client = await make_client()
    resp = await client.get(path)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "30"
    assert await resp.json() == {"error": "storage_unavailable", "detail": "the database cannot be reached now; retry later"}


async def test_an_unknown_route_and_a_wrong_method_say_what_to_fix(client):
    """aiohttp's own 404 and 405 said only their reason phrase; the detail says what to fix (the 405
    from the Allow header it sends beside it)."""
    resp = await client.get("/api/nope")
    assert (resp.status, await resp.json()) == (404, {
        "error": "not_found", "detail": "no such route; docs/api.md and docs/protocol.md list them"})
    resp = await client.delete("/api/readings")
    assert (resp.status, resp.headers["Allow"]) == (405, "GET")
    assert await resp.json() == {"error": "method_not_allowed", "detail": "this route takes GET only"}
    resp = await client.post("/api/nodes")
    assert (await resp.json())["detail"] == "this route takes GET, HEAD only"
