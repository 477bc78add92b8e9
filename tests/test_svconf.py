"""service/svconf.py: the URLs a node is given, its LAN address and port, and loopback URLs refused.

The routing table is a stub here (a fake UDP socket whose connect() picks the source address as
the kernel would: longest prefix match), as no machine's real routes can be chosen by a test; the
real kernel's answer on this machine is checked once too.
"""
from __future__ import annotations

import errno
import os
import ipaddress
import socket
from pathlib import Path

import pytest

from tswarm import auth, svconf as svconf_module
from tswarm.datadir import DataDirInUse, hold_data_dir, serving_port
from tswarm.settings import Config
from tswarm.svconf import lan_address, loopback_problem, source_address, svconf, unreachable_host

PI_ROUTES = [("0.0.0.0/0", "192.168.1.20"), ("192.168.1.0/24", "192.168.1.20"), ("127.0.0.0/8", "127.0.0.1")]


class StubRouting:
    """A stand-in for the `socket` module as svconf uses it: routes, and a hostname that resolves
    as Debian's /etc/hosts makes it (127.0.1.1)."""

    AF_INET, SOCK_DGRAM = socket.AF_INET, socket.SOCK_DGRAM

    def __init__(self, routes):
        self.routes = [(ipaddress.ip_network(net), src) for net, src in routes]
        self.asked: list[tuple[str, int]] = []
        routing = self

        class Socket:
            def __init__(self, family=-1, type=-1):
                assert (family, type) == (socket.AF_INET, socket.SOCK_DGRAM)
                self.source = None

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def connect(self, address):
                routing.asked.append(address)
                matches = [(net, src) for net, src in routing.routes if ipaddress.ip_address(address[0]) in net]
                if not matches:
                    raise OSError(errno.ENETUNREACH, "Network is unreachable")
                self.source = max(matches, key=lambda m: m[0].prefixlen)[1]

            def getsockname(self):
                return (self.source, 54321)

            # no send/sendto: asking the route must send nothing

        self.socket = Socket

    @staticmethod
    def gethostname():
        return "raspberrypi"

    @staticmethod
    def getaddrinfo(host, *args, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.1.1", 0))]


@pytest.fixture
def routes(monkeypatch):
    def use(table):
        stub = StubRouting(table)
        monkeypatch.setattr(svconf_module, "socket", stub)
        return stub

    return use


def test_lan_address_is_the_source_of_the_default_route_not_the_hostname(routes):
    stub = routes(PI_ROUTES + [("10.8.0.0/16", "10.8.0.5")])  # a VPN beside the LAN
    assert lan_address() == "192.168.1.20"
    assert stub.asked == [svconf_module.ROUTE_PROBE]  # a public address: the default route answers
    assert not ipaddress.ip_address(stub.asked[0][0]).is_private


def test_url_local_is_the_lan_address_on_a_pi_whose_hostname_is_127_0_1_1(routes):
    routes(PI_ROUTES)
    conf = svconf(Config(), "kitchen", "pw")
    assert conf == {"url": "http://192.168.1.20:8080/api/nodes/kitchen",
                    "url_local": "http://192.168.1.20:8080/api/nodes/kitchen",
                    "login": "kitchen", "xauth": auth.xauth("kitchen", "pw")}
    assert loopback_problem(Config(), conf) is None


@pytest.mark.parametrize("table", [[("127.0.0.0/8", "127.0.0.1")], [("0.0.0.0/0", "127.0.0.1")]],
                         ids=["no default route", "default route through loopback"])
def test_no_lan_address_gives_none_and_svconf_says_why(routes, table):
    routes(table)
    assert lan_address() is None
    conf = svconf(Config(), "kitchen", "pw")
    assert conf["url"] == conf["url_local"] == "http://127.0.0.1:8080/api/nodes/kitchen"
    assert loopback_problem(Config(), conf) == (
        "this machine has no LAN address (no default route), so the node's url would be "
        "http://127.0.0.1:8080/api/nodes/kitchen, which a board cannot reach: set TSWARM_PUBLIC_URL to the address "
        "nodes reach this machine at (e.g. http://192.168.1.20:8080)"
    )


def test_with_a_public_url_and_no_lan_address_url_local_repeats_the_url(routes):
    routes([])
    config = Config(public_url="https://swarm.example.org")
    conf = svconf(config, "kitchen", "pw")
    assert conf["url"] == conf["url_local"] == "https://swarm.example.org/api/nodes/kitchen"
    assert loopback_problem(config, conf) is None


def test_a_loopback_public_url_is_a_problem_even_with_a_lan_address(routes):
    routes(PI_ROUTES)
    config = Config(public_url="http://localhost:9000")
    conf = svconf(config, "kitchen", "pw")
    assert conf["url_local"] == "http://192.168.1.20:8080/api/nodes/kitchen"
    assert loopback_problem(config, conf) == (
        "TSWARM_PUBLIC_URL http://localhost:9000 is this machine's loopback, which a board cannot reach: set it to "
        "the address or name nodes reach this machine at (e.g. http://192.168.1.20:8080)"
    )


def test_the_loopback_problem_suggests_this_machines_own_lan_url(routes):
    routes([("0.0.0.0/0", "10.1.2.3")])
    config = Config(public_url="http://127.0.0.1:9000", port=9000)
    assert loopback_problem(config, svconf(config, "kitchen", "pw")).endswith("(e.g. http://10.1.2.3:9000)")


@pytest.mark.parametrize("env, port", [({"TSWARM_PORT": "9000"}, 9000), ({"TSWARM_PORT": "9000", "PORT": "5000"}, 5000)])
def test_url_local_has_the_port_serve_listens_on(routes, env, port):
    routes(PI_ROUTES)
    config = Config.from_env(env)
    assert config.port == port  # the same Config.port `tswarm serve` binds
    assert svconf(config, "kitchen", "pw")["url_local"] == f"http://192.168.1.20:{port}/api/nodes/kitchen"


def test_url_local_has_the_port_of_the_service_running_on_the_data_dir(routes, tmp_path):
    """`tswarm serve --port 9000` beside `tswarm node add` without TSWARM_PORT: the running service's
    port (from its data dir's lock), not the setting's default."""
    routes(PI_ROUTES)
    config = Config(data_dir=tmp_path / "data")
    with hold_data_dir(config.data_dir, port=9000):
        assert serving_port(config.data_dir) == 9000
        assert svconf(config, "kitchen", "pw")["url_local"] == "http://192.168.1.20:9000/api/nodes/kitchen"
    assert serving_port(config.data_dir) is None  # let go: nobody serves, the setting's port again
    assert svconf(config, "kitchen", "pw")["url_local"] == "http://192.168.1.20:8080/api/nodes/kitchen"


def test_a_second_service_on_a_held_data_dir_is_refused_with_the_holders_pid(tmp_path):
    with hold_data_dir(tmp_path, port=9000):
        with pytest.raises(DataDirInUse, match=rf"in use by another tswarm serve \(pid {os.getpid()}\)"):
            with hold_data_dir(tmp_path, port=9001):
                pass


@pytest.mark.parametrize("host, unreachable", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("LOCALHOST.", True), ("tswarm.localhost", True),
    ("0.0.0.0", True), ("::1", True), ("[::1]", True), ("192.168.1.20", False), ("10.0.0.2", False),
    ("raspberrypi.local", False), ("swarm.example.org", False),
])
def test_unreachable_hosts_are_loopback_and_unspecified_addresses(host, unreachable):
    assert unreachable_host(host) is unreachable


def default_route_interface() -> str | None:
    """The interface of the default route in this machine's /proc/net/route, or None."""
    route = Path("/proc/net/route")
    if not route.exists():
        pytest.skip("no /proc/net/route (not Linux)")
    for line in route.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def test_lan_address_on_this_machine_is_its_own_and_not_loopback():
    """The real kernel: with a default route, lan_address is an address of this machine (a socket binds
    to it) other than loopback; without one, None."""
    found = lan_address()
    if default_route_interface() is None:
        assert found is None
        return
    assert found is not None and not unreachable_host(found)
    assert found == source_address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((found, 0))  # an address of this machine
