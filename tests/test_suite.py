"""The test suite's own rules (tests/conftest.py), checked so that they stay."""
from hypothesis import settings


def test_hypothesis_examples_have_no_deadline_so_a_loaded_machine_does_not_fail_them():
    assert settings().deadline is None


def test_a_missing_server_fails_in_ci_and_skips_elsewhere(monkeypatch):
    import pytest

    from tests import servers

    monkeypatch.setattr(servers, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="install the Debian package 'influxdb'"):
        servers.require_binary("/nonexistent/influxd", "influxdb")
    monkeypatch.setattr(servers, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="install the Debian package 'influxdb'"):
        servers.require_binary("/nonexistent/influxd", "influxdb")


def test_the_real_server_fixtures_are_declared_once_for_every_suite():
    """tests/integration and tests/faults share one set (tests/conftest.py over tests/servers.py)."""
    from pathlib import Path

    tests = Path(__file__).parent
    sources = {str(p.relative_to(tests)): p.read_text() for p in tests.rglob("*.py") if p != Path(__file__)}

    def where(text):
        return sorted(path for path, source in sources.items() if text in source)

    assert {name: where(f"def {name}(") for name in ("influxdb1", "influxdb1_factory", "victoria_metrics")} == {
        "influxdb1": ["conftest.py"], "influxdb1_factory": ["conftest.py"], "victoria_metrics": ["conftest.py"],
    }
    assert where("class InfluxDB1(") == where("class VictoriaMetrics(") == ["servers.py"]
