"""The fault suite (`make test-faults`, also part of `make test`): real processes, real signals.

Each test prints a one-line figure (readings acked, lost, duplicated; requests tried, 5xx).
The real-server fixtures (``influxdb1``, ``influxdb1_factory``, ``postgres_factory``) are
tests/conftest.py's, shared with tests/integration; the servers themselves are started by
tests/servers.py. A test marked ``pytest.mark.engines`` runs on SQLite and on PostgreSQL (tests/conftest.py).
"""
