"""The fault suite (`make test-faults`, also part of `make test`): real processes, real signals.

Each test prints a one-line figure (readings acked, lost, duplicated; requests tried, 5xx).
The real-server fixtures are shared with tests/integration.
"""
from tests.integration.conftest import influxdb1, influxdb1_factory  # noqa: F401  (fixtures)
