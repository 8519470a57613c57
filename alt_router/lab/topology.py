"""Lab topology: TOML in, validated frozen dataclasses out (pure, no I/O but reading the file).

The format is documented in docs/lab.md.  Every error names the offending key
(``links[1].b.host: unknown host 'x'``) because a lab file is edited by hand and
a bare "invalid topology" sends people hunting.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import (
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from pathlib import Path
from typing import Any

from alt_router.types import IPAddress

IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

# Every kernel object the lab creates lives in a namespace called
# "ar-<lab>-<host>" (or "ar-<lab>-sw-<segment>" for a bridge), so one prefix
# finds all leftovers of a crashed run.  Hyphens are banned in lab, host and
# segment names so that prefix can never match a different lab or host.
NETNS_PREFIX = "ar-"
IFNAMSIZ = 15  # the kernel's IFNAMSIZ (16) minus the NUL
# Lab names only appear in namespace names (files in /run/netns), never in interface names, so the
# limit is for readability: room for a test run's suffix (tests/conftest.py) after a short base.
MAX_LAB_NAME = 16
MAX_HOST_NAME = 12  # bridge ports are named "p-<host>" and must fit IFNAMSIZ

_NAME = re.compile(r"[a-z][a-z0-9]*\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class TopologyError(ValueError):
    """The topology file is malformed; the message starts with the offending key."""


@dataclass(frozen=True, slots=True)
class Route:
    to: IPNetwork
    via: IPAddress | None = None
    dev: str | None = None


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    forwarding: bool = False
    sysctls: tuple[tuple[str, str], ...] = ()
    loopbacks: tuple[IPInterface, ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a link, or one member of a segment: an interface in a host."""

    host: str
    ifname: str
    addresses: tuple[IPInterface, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair between two hosts."""

    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A shared L2 segment: a bridge in its own namespace, one veth per member."""

    name: str
    members: tuple[Endpoint, ...]
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Process:
    host: str
    name: str
    argv: tuple[str, ...]


def netns_name(lab: str, host: str) -> str:
    return f"{NETNS_PREFIX}{lab}-{host}"


def segment_netns_name(lab: str, segment: str) -> str:
    return f"{NETNS_PREFIX}{lab}-sw-{segment}"


def lab_netns_prefix(lab: str) -> str:
    return f"{NETNS_PREFIX}{lab}-"


def bridge_port_name(host: str) -> str:
    return f"p-{host}"


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    hosts: tuple[Host, ...]
    links: tuple[Link, ...] = ()
    segments: tuple[Segment, ...] = ()
    processes: tuple[Process, ...] = ()

    @classmethod
    def from_toml(cls, source: str | Path) -> Topology:
        """Parse a topology from TOML text, or from a file given as a Path or an existing path string."""
        if isinstance(source, Path) or ("\n" not in source and Path(source).is_file()):
            try:
                text = Path(source).read_text()
            except OSError as exc:
                raise TopologyError(f"cannot read topology file {source}: {exc}") from exc
        else:
            text = source
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TopologyError(f"not valid TOML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return _parse(data)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def netns(self, host: str) -> str:
        return netns_name(self.name, host)

    def segment_netns(self, segment: str) -> str:
        return segment_netns_name(self.name, segment)

    def all_netns(self) -> tuple[str, ...]:
        return tuple(self.netns(h.name) for h in self.hosts) + tuple(
            self.segment_netns(s.name) for s in self.segments
        )

    def endpoints(self, host: str) -> tuple[Endpoint, ...]:
        """Every interface the lab creates in ``host``, links first, then segments."""
        ends = [e for link in self.links for e in (link.a, link.b) if e.host == host]
        ends += [m for seg in self.segments for m in seg.members if m.host == host]
        return tuple(ends)


# --- parsing -----------------------------------------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], key: str, allowed: set[str], required: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise TopologyError(f"{_join(key, name)}: unknown key (allowed: {', '.join(sorted(allowed))})")
    for name in sorted(required):
        if name not in table:
            raise TopologyError(f"{_join(key, name)}: missing")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{key}: expected a table, got {type(value).__name__}")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise TopologyError(f"{key}: expected an array, got {type(value).__name__}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise TopologyError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise TopologyError(f"{key}: expected true or false, got {value!r}")
    return value


def check_lab_name(name: str, key: str = "name") -> str:
    """``name`` if it is a valid lab name, else TopologyError naming ``key``."""
    return _name(name, key, MAX_LAB_NAME)


def _name(value: Any, key: str, max_len: int) -> str:
    name = _str(value, key)
    if not _NAME.match(name) or len(name) > max_len:
        raise TopologyError(
            f"{key}: bad name {name!r} (lowercase letter then letters/digits, at most {max_len} chars)"
        )
    return name


def _mtu(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise TopologyError(f"{key}: MTU must be an integer in 68..65535, got {value!r}")
    return value


def _ifname(value: Any, key: str) -> str:
    name = _str(value, key)
    if len(name) > IFNAMSIZ:
        raise TopologyError(
            f"{key}: interface name {name!r} is {len(name)} chars, the kernel allows {IFNAMSIZ}"
        )
    if not _IFNAME.match(name) or name in {".", "..", "lo"}:
        raise TopologyError(f"{key}: bad interface name {name!r}")
    return name


def _interface(value: Any, key: str) -> IPInterface:
    text = _str(value, key)
    if "/" not in text:
        raise TopologyError(f"{key}: address {text!r} needs a prefix length (e.g. 10.0.0.1/24)")
    try:
        return ip_interface(text)
    except ValueError as exc:
        raise TopologyError(f"{key}: bad address/prefix {text!r}: {exc}") from exc


def _addresses(value: Any, key: str) -> tuple[IPInterface, ...]:
    return tuple(_interface(v, f"{key}[{i}]") for i, v in enumerate(_list(value, key)))


def _route(value: Any, key: str) -> Route:
    table = _table(value, key)
    _check_keys(table, key, {"to", "via", "dev"}, {"to"})
    to_text = _str(table["to"], f"{key}.to")
    try:
        to = ip_network("0.0.0.0/0" if to_text == "default" else to_text)
    except ValueError as exc:
        raise TopologyError(f"{key}.to: bad prefix {to_text!r}: {exc}") from exc
    via: IPAddress | None = None
    if "via" in table:
        via_text = _str(table["via"], f"{key}.via")
        try:
            via = ip_address(via_text)
        except ValueError as exc:
            raise TopologyError(f"{key}.via: bad address {via_text!r}") from exc
        if via.version != to.version:
            raise TopologyError(f"{key}.via: {via} is IPv{via.version} but 'to' {to} is IPv{to.version}")
    dev = _ifname(table["dev"], f"{key}.dev") if "dev" in table else None
    if via is None and dev is None:
        raise TopologyError(f"{key}: a route needs 'via', 'dev' or both")
    return Route(to=to, via=via, dev=dev)


def _host(name: str, value: Any, key: str) -> Host:
    table = _table(value, key)
    _check_keys(table, key, {"forwarding", "sysctls", "loopbacks", "routes"}, set())
    sysctls: list[tuple[str, str]] = []
    for sk, sv in _table(table.get("sysctls", {}), f"{key}.sysctls").items():
        skey = f"{key}.sysctls.{sk}"
        if not re.fullmatch(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+", sk):
            raise TopologyError(f"{skey}: bad sysctl name")
        if isinstance(sv, bool):
            sysctls.append((sk, str(int(sv))))
        elif isinstance(sv, str | int):
            sysctls.append((sk, str(sv)))
        else:
            raise TopologyError(f"{skey}: expected a string or integer value, got {type(sv).__name__}")
    routes = tuple(
        _route(r, f"{key}.routes[{i}]") for i, r in enumerate(_list(table.get("routes", []), f"{key}.routes"))
    )
    return Host(
        name=name,
        forwarding=_bool(table.get("forwarding", False), f"{key}.forwarding"),
        sysctls=tuple(sysctls),
        loopbacks=_addresses(table.get("loopbacks", []), f"{key}.loopbacks"),
        routes=routes,
    )


def _endpoint(value: Any, key: str, hosts: set[str]) -> Endpoint:
    table = _table(value, key)
    _check_keys(table, key, {"host", "ifname", "addresses"}, {"host", "ifname"})
    host = _str(table["host"], f"{key}.host")
    if host not in hosts:
        raise TopologyError(f"{key}.host: unknown host {host!r}")
    return Endpoint(
        host=host,
        ifname=_ifname(table["ifname"], f"{key}.ifname"),
        addresses=_addresses(table.get("addresses", []), f"{key}.addresses"),
    )


def _parse(data: Mapping[str, Any]) -> Topology:
    _check_keys(data, "", {"name", "hosts", "links", "segments", "processes"}, {"name", "hosts"})
    lab = _name(data["name"], "name", MAX_LAB_NAME)

    hosts_table = _table(data["hosts"], "hosts")
    if not hosts_table:
        raise TopologyError("hosts: at least one host is needed")
    hosts = tuple(
        _host(_name(n, f"hosts.{n}", MAX_HOST_NAME), v, f"hosts.{n}") for n, v in hosts_table.items()
    )
    host_names = {h.name for h in hosts}

    links: list[Link] = []
    for i, raw in enumerate(_list(data.get("links", []), "links")):
        key = f"links[{i}]"
        table = _table(raw, key)
        _check_keys(table, key, {"a", "b", "mtu"}, {"a", "b"})
        link = Link(
            a=_endpoint(table["a"], f"{key}.a", host_names),
            b=_endpoint(table["b"], f"{key}.b", host_names),
            mtu=_mtu(table.get("mtu"), f"{key}.mtu"),
        )
        if link.a.host == link.b.host:
            raise TopologyError(f"{key}: both ends are in host {link.a.host!r}; a link joins two hosts")
        links.append(link)

    segments: list[Segment] = []
    seen_segments: set[str] = set()
    for i, raw in enumerate(_list(data.get("segments", []), "segments")):
        key = f"segments[{i}]"
        table = _table(raw, key)
        _check_keys(table, key, {"name", "members", "mtu"}, {"name", "members"})
        seg_name = _name(table["name"], f"{key}.name", MAX_HOST_NAME)
        if seg_name in seen_segments:
            raise TopologyError(f"{key}.name: duplicate segment {seg_name!r}")
        seen_segments.add(seg_name)
        raw_members = _list(table["members"], f"{key}.members")
        if not raw_members:
            raise TopologyError(f"{key}.members: a segment needs at least one member")
        members = tuple(_endpoint(m, f"{key}.members[{j}]", host_names) for j, m in enumerate(raw_members))
        member_hosts = [m.host for m in members]
        for j, h in enumerate(member_hosts):
            if h in member_hosts[:j]:
                raise TopologyError(f"{key}.members[{j}].host: host {h!r} is already on segment {seg_name!r}")
        segments.append(Segment(name=seg_name, members=members, mtu=_mtu(table.get("mtu"), f"{key}.mtu")))

    processes: list[Process] = []
    seen_procs: set[tuple[str, str]] = set()
    for i, raw in enumerate(_list(data.get("processes", []), "processes")):
        key = f"processes[{i}]"
        table = _table(raw, key)
        _check_keys(table, key, {"host", "name", "argv"}, {"host", "name", "argv"})
        host = _str(table["host"], f"{key}.host")
        if host not in host_names:
            raise TopologyError(f"{key}.host: unknown host {host!r}")
        pname = _name(table["name"], f"{key}.name", 32)
        if (host, pname) in seen_procs:
            raise TopologyError(f"{key}.name: duplicate process {pname!r} on host {host!r}")
        seen_procs.add((host, pname))
        argv = tuple(_str(a, f"{key}.argv[{j}]") for j, a in enumerate(_list(table["argv"], f"{key}.argv")))
        if not argv:
            raise TopologyError(f"{key}.argv: empty command")
        processes.append(Process(host=host, name=pname, argv=argv))

    topo = Topology(
        name=lab, hosts=hosts, links=tuple(links), segments=tuple(segments), processes=tuple(processes)
    )
    _check_interfaces_and_addresses(topo)
    return topo


def _endpoint_keys(topo: Topology) -> list[tuple[str, Endpoint]]:
    keyed: list[tuple[str, Endpoint]] = []
    for i, link in enumerate(topo.links):
        keyed += [(f"links[{i}].a", link.a), (f"links[{i}].b", link.b)]
    for i, seg in enumerate(topo.segments):
        keyed += [(f"segments[{i}].members[{j}]", m) for j, m in enumerate(seg.members)]
    return keyed


def _check_interfaces_and_addresses(topo: Topology) -> None:
    ifnames: dict[tuple[str, str], str] = {}
    addresses: dict[IPAddress, str] = {}

    def claim(addr: IPInterface, key: str) -> None:
        if addr.ip in addresses:
            raise TopologyError(f"{key}: duplicate address {addr.ip} (already used by {addresses[addr.ip]})")
        addresses[addr.ip] = key

    for host in topo.hosts:
        for j, addr in enumerate(host.loopbacks):
            claim(addr, f"hosts.{host.name}.loopbacks[{j}]")
    for key, end in _endpoint_keys(topo):
        if (end.host, end.ifname) in ifnames:
            raise TopologyError(
                f"{key}.ifname: interface {end.ifname!r} already exists in host {end.host!r} "
                f"({ifnames[(end.host, end.ifname)]})"
            )
        ifnames[(end.host, end.ifname)] = key
        for j, addr in enumerate(end.addresses):
            claim(addr, f"{key}.addresses[{j}]")
    for host in topo.hosts:
        for j, route in enumerate(host.routes):
            if route.dev is not None and (host.name, route.dev) not in ifnames:
                raise TopologyError(
                    f"hosts.{host.name}.routes[{j}].dev: no interface {route.dev!r} in host {host.name!r}"
                )
