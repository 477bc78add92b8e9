"""The test suite's own rules (tests/conftest.py), checked so that they stay."""
import os
from pathlib import Path

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


def test_free_port_never_hands_out_a_port_another_process_claimed_a_moment_ago(monkeypatch, tmp_path):
    """Two xdist workers drawing at once: the kernel may call one port free for both; the claim decides."""
    from tests import servers

    monkeypatch.setattr(servers, "PORT_CLAIMS", tmp_path / "claims")
    draws = iter([40001, 40001, 40003, 40005])
    monkeypatch.setattr(servers, "_kernel_port", lambda: next(draws))
    assert servers.free_port() == 40001
    assert servers.free_port() == 40003  # 40001 is claimed (by this process or another: one folder for all)
    stale = tmp_path / "claims" / "40005"
    stale.touch()
    os.utime(stale, (0, 0))  # a claim from long ago: its server bound the port long since, or went
    draws = iter([40005, 40005])
    monkeypatch.setattr(servers, "_kernel_port", lambda: next(draws))
    assert servers.free_port() == 40005
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["40001", "40003", "40005"]


def test_each_module_is_one_unit_of_work_and_the_fault_suite_one_unit_for_all(request):
    from tests import conftest

    assert conftest.xdist_group_of(request.node.nodeid) == "tests/test_suite.py"
    assert conftest.xdist_group_of("tests/faults/test_crash.py::test_sigkill[sqlite]") == conftest.LOAD_GROUP
    assert conftest.xdist_group_of("tests/faults/test_new_fault.py::test_x") == conftest.LOAD_GROUP
    assert conftest.xdist_group_of("tests/storage/test_snapshot.py::TestX::test_y[a::b]") == \
        "tests/storage/test_snapshot.py"


def test_sigint_is_delivered_to_children_even_when_the_suite_was_started_with_it_ignored():
    """`( pytest & )` in a shell ignores SIGINT, which children inherit; tests/conftest.py undoes that."""
    import signal

    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
