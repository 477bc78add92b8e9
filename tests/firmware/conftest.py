import pytest

from tests.servers import ServiceProcess


@pytest.fixture(scope="session")
def firmware_service(tmp_path_factory):
    """One real `tswarm serve` for the firmware tests."""
    data_dir = tmp_path_factory.mktemp("firmware-service") / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir) as service:
        yield service
