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
