from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest

from alt_router.lab import Topology, TopologyError
from alt_router.lab.topology import bridge_port_name, lab_netns_prefix

LINE = """
name = "line"

[hosts.a]
loopbacks = ["192.0.2.1/32", "2001:db8::1/128"]
routes = [{ to = "default", via = "10.0.1.1" }, { to = "::/0", via = "fd00:1::1" }]

[hosts.r]
forwarding = true
sysctls = { "net.ipv4.conf.all.rp_filter" = 0, "net.ipv6.conf.all.accept_ra" = "0" }

[hosts.b]
routes = [{ to = "10.0.1.0/24", via = "10.0.2.1", dev = "eth0" }]

[[links]]
a = { host = "a", ifname = "eth0", addresses = ["10.0.1.2/24", "fd00:1::2/64"] }
b = { host = "r", ifname = "eth-a", addresses = ["10.0.1.1/24", "fd00:1::1/64"] }

[[links]]
a = { host = "r", ifname = "eth-b", addresses = ["10.0.2.1/24"] }
b = { host = "b", ifname = "eth0", addresses = ["10.0.2.2/24"] }
mtu = 1400

[[segments]]
name = "lan"
mtu = 9000
members = [
  { host = "a", ifname = "lan0", addresses = ["192.168.0.1/24"] },
  { host = "b", ifname = "lan0" },
]

[[processes]]
host = "r"
name = "sleeper"
argv = ["sleep", "60"]
"""


def test_parses_a_full_topology() -> None:
    topo = Topology.from_toml(LINE)
    assert topo.name == "line"
    assert [h.name for h in topo.hosts] == ["a", "r", "b"]
    a, r, b = topo.hosts
    assert a.loopbacks == (ip_interface("192.0.2.1/32"), ip_interface("2001:db8::1/128"))
    assert a.routes[0].to == ip_network("0.0.0.0/0")
    assert a.routes[0].via == ip_address("10.0.1.1")
    assert a.routes[1].to == ip_network("::/0")
    assert r.forwarding and not a.forwarding
    assert dict(r.sysctls) == {"net.ipv4.conf.all.rp_filter": "0", "net.ipv6.conf.all.accept_ra": "0"}
    assert b.routes[0].dev == "eth0"
    assert topo.links[0].a.ifname == "eth0" and topo.links[0].b.host == "r"
    assert topo.links[0].mtu is None and topo.links[1].mtu == 1400
    assert topo.segments[0].mtu == 9000
    assert topo.segments[0].members[1].addresses == ()
    assert topo.processes[0].argv == ("sleep", "60")
    assert [e.ifname for e in topo.endpoints("a")] == ["eth0", "lan0"]


def test_names_are_prefixed_by_lab() -> None:
    topo = Topology.from_toml(LINE)
    assert topo.netns("a") == "ar-line-a"
    assert topo.segment_netns("lan") == "ar-line-sw-lan"
    assert all(ns.startswith(lab_netns_prefix("line")) for ns in topo.all_netns())
    # A lab whose name extends another's must not share its prefix.
    assert not topo.netns("a").startswith(lab_netns_prefix("lin"))
    assert len(bridge_port_name("a" * 12)) <= 15


def test_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "line.toml"
    path.write_text(LINE)
    assert Topology.from_toml(path).name == "line"
    assert Topology.from_toml(str(path)).name == "line"


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        Topology.from_toml(tmp_path / "nope.toml")


def _minimal(extra: str = "", hosts: str = "[hosts.a]\n[hosts.b]\n", name: str = "t") -> str:
    return f'name = "{name}"\n{hosts}\n{extra}'


def _link(
    a: str = 'host = "a", ifname = "eth0"', b: str = 'host = "b", ifname = "eth0"', extra: str = ""
) -> str:
    return f"[[links]]\na = {{ {a} }}\nb = {{ {b} }}\n{extra}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = ", "not valid TOML"),
        ('name = "t"\n', r"^hosts: missing"),
        ('name = "t"\nhosts = {}\n', r"^hosts: at least one host"),
        (_minimal(name="Bad-Name"), r"^name: bad name 'Bad-Name'"),
        (_minimal(name="waytoolongnameforalab"), r"^name: bad name .* at most 16"),
        (_minimal(hosts="[hosts.a-b]\n"), r"^hosts\.a-b: bad name"),
        (_minimal(hosts="[hosts.a]\nforwarding = 1\n"), r"^hosts\.a\.forwarding: expected true or false"),
        (_minimal(hosts="[hosts.a]\ncolour = 1\n"), r"^hosts\.a\.colour: unknown key"),
        ('name = "t"\ncolour = 1\n[hosts.a]\n', r"^colour: unknown key"),
        (
            _minimal(hosts='[hosts.a]\nloopbacks = ["10.0.0.1"]\n'),
            r"^hosts\.a\.loopbacks\[0\]: .*needs a prefix",
        ),
        (
            _minimal(hosts='[hosts.a]\nloopbacks = ["10.0.0.1/33"]\n'),
            r"^hosts\.a\.loopbacks\[0\]: bad address",
        ),
        (
            _minimal(hosts='[hosts.a]\nloopbacks = ["10.0.0.300/24"]\n'),
            r"^hosts\.a\.loopbacks\[0\]: bad address",
        ),
        (
            _minimal(hosts='[hosts.a]\nloopbacks = "10.0.0.1/32"\n'),
            r"^hosts\.a\.loopbacks: expected an array",
        ),
        (
            _minimal(hosts='[hosts.a]\nsysctls = { "bad name" = 1 }\n'),
            r"^hosts\.a\.sysctls\.bad name: bad sysctl",
        ),
        (
            _minimal(hosts='[hosts.a]\nroutes = [{ to = "10.0.0.0/8" }]\n'),
            r"^hosts\.a\.routes\[0\]: .*needs 'via'",
        ),
        (
            _minimal(hosts='[hosts.a]\nroutes = [{ to = "10.0.0.0/8", via = "fd00::1" }]\n'),
            r"^hosts\.a\.routes\[0\]\.via: fd00::1 is IPv6",
        ),
        (
            _minimal(hosts='[hosts.a]\nroutes = [{ to = "10.0.0.1/8", via = "10.0.0.2" }]\n'),
            r"^hosts\.a\.routes\[0\]\.to: bad prefix",
        ),
        (
            _minimal(hosts='[hosts.a]\nroutes = [{ to = "10.0.0.0/8", dev = "eth9" }]\n'),
            r"^hosts\.a\.routes\[0\]\.dev: no interface 'eth9'",
        ),
        (_minimal(_link(a='host = "x", ifname = "eth0"')), r"^links\[0\]\.a\.host: unknown host 'x'"),
        (_minimal(_link(b='host = "b"')), r"^links\[0\]\.b\.ifname: missing"),
        (
            _minimal(_link(a='host = "a", ifname = "sixteen-chars-xx"')),
            r"^links\[0\]\.a\.ifname: interface name 'sixteen-chars-xx' is 16 chars",
        ),
        (_minimal(_link(a='host = "a", ifname = "eth 0"')), r"^links\[0\]\.a\.ifname: bad interface name"),
        (_minimal(_link(a='host = "a", ifname = "lo"')), r"^links\[0\]\.a\.ifname: bad interface name 'lo'"),
        (_minimal(_link(b='host = "a", ifname = "eth1"')), r"^links\[0\]: both ends are in host 'a'"),
        (_minimal(_link(extra="mtu = 10")), r"^links\[0\]\.mtu: MTU must be"),
        (_minimal(_link(extra="mtu = true")), r"^links\[0\]\.mtu: MTU must be"),
        (_minimal(_link() + _link()), r"^links\[1\]\.a\.ifname: interface 'eth0' already exists in host 'a'"),
        (
            _minimal(
                _link(
                    a='host = "a", ifname = "eth0", addresses = ["10.0.0.1/24"]',
                    b='host = "b", ifname = "eth0", addresses = ["10.0.0.1/24"]',
                )
            ),
            r"^links\[0\]\.b\.addresses\[0\]: duplicate address 10\.0\.0\.1 \(already used by links\[0\]\.a",
        ),
        (
            _minimal(
                _link(a='host = "a", ifname = "eth0", addresses = ["192.0.2.1/24"]'),
                hosts='[hosts.a]\nloopbacks = ["192.0.2.1/32"]\n[hosts.b]\n',
            ),
            r"^links\[0\]\.a\.addresses\[0\]: duplicate address 192\.0\.2\.1 .*hosts\.a\.loopbacks\[0\]",
        ),
        (
            _minimal('[[segments]]\nname = "lan"\nmembers = []\n'),
            r"^segments\[0\]\.members: a segment needs at least one member",
        ),
        (
            _minimal(
                '[[segments]]\nname = "lan"\n'
                'members = [{ host = "a", ifname = "l0" }, { host = "a", ifname = "l1" }]'
            ),
            r"^segments\[0\]\.members\[1\]\.host: host 'a' is already on segment 'lan'",
        ),
        (
            _minimal(
                '[[segments]]\nname = "lan"\nmembers = [{ host = "a", ifname = "l0" }]\n'
                '[[segments]]\nname = "lan"\nmembers = [{ host = "b", ifname = "l0" }]\n'
            ),
            r"^segments\[1\]\.name: duplicate segment 'lan'",
        ),
        (
            _minimal('[[processes]]\nhost = "z"\nname = "p"\nargv = ["true"]\n'),
            r"^processes\[0\]\.host: unknown host 'z'",
        ),
        (
            _minimal('[[processes]]\nhost = "a"\nname = "p"\nargv = []\n'),
            r"^processes\[0\]\.argv: empty command",
        ),
        (
            _minimal('[[processes]]\nhost = "a"\nname = "p"\nargv = ["true", 1]\n'),
            r"^processes\[0\]\.argv\[1\]: expected a string",
        ),
    ],
)
def test_validation_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_toml(text)


def test_topology_error_is_a_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_same_interface_name_in_different_hosts_is_fine() -> None:
    topo = Topology.from_toml(_minimal(_link()))
    assert {(e.host, e.ifname) for e in (topo.links[0].a, topo.links[0].b)} == {("a", "eth0"), ("b", "eth0")}
