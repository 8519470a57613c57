"""A GRE tunnel's configuration, from the command line or a TOML file.

TOML layout (see docs/gre.md)::

    mode = "auto"            # auto | kernel | userspace
    [[tunnel]]
    name = "gre1"
    local = "192.0.2.1"
    remote = "192.0.2.2"
    key = 42                 # optional, RFC 2890 key
    checksum = false
    sequence = false
    ttl = 64
    underlay_mtu = 1500
    addresses = ["10.255.0.1/30", "fd00:255::1/64"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import Any, Final

from alt_router.gre.header import overhead
from alt_router.types import IPAddress

MODES: Final = ("auto", "kernel", "bpf", "userspace")
IFNAMSIZ: Final = 16
# An inner MTU below the IPv6 minimum would silently break IPv6 over the tunnel.
MIN_INNER_MTU: Final = 1280
IPInterface = IPv4Interface | IPv6Interface


class TunnelConfigError(ValueError):
    """A tunnel definition that cannot work."""


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    name: str
    local: IPAddress
    remote: IPAddress
    key: int | None = None
    checksum: bool = False
    sequence: bool = False
    ttl: int = 64
    underlay_mtu: int = 1500
    addresses: tuple[IPInterface, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.name or len(self.name) >= IFNAMSIZ or any(c in self.name for c in "/ \t\n:") or (
            self.name in {".", ".."}
        ):
            raise TunnelConfigError(f"tunnel name {self.name!r} is not a valid interface name (1-15 chars)")
        if self.local.version != self.remote.version:
            raise TunnelConfigError(
                f"{self.name}: local {self.local} and remote {self.remote} differ in family"
            )
        if self.local == self.remote:
            raise TunnelConfigError(f"{self.name}: local and remote are both {self.local}")
        if self.key is not None and not 0 <= self.key <= 0xFFFFFFFF:
            raise TunnelConfigError(f"{self.name}: key {self.key} does not fit 32 bits")
        if not 1 <= self.ttl <= 255:
            raise TunnelConfigError(f"{self.name}: ttl {self.ttl} out of range 1..255")
        if self.mtu < MIN_INNER_MTU:
            raise TunnelConfigError(
                f"{self.name}: underlay MTU {self.underlay_mtu} leaves {self.mtu} for inner packets, "
                f"below {MIN_INNER_MTU}"
            )

    @property
    def family(self) -> int:
        return self.local.version

    @property
    def overhead(self) -> int:
        return overhead(self.family, key=self.key is not None, csum=self.checksum, seq=self.sequence)

    @property
    def mtu(self) -> int:
        """The inner (TUN or GRE link) MTU that keeps outer packets within the underlay MTU."""
        return self.underlay_mtu - self.overhead


def _address(text: object, what: str) -> IPAddress:
    if not isinstance(text, str):
        raise TunnelConfigError(f"{what} must be a string, not {text!r}")
    try:
        return ip_address(text)
    except ValueError as exc:
        raise TunnelConfigError(f"{what}: {exc}") from None


def _interface(text: object, what: str) -> IPInterface:
    if not isinstance(text, str) or "/" not in text:
        raise TunnelConfigError(f"{what} must be an address with a prefix length, like 10.255.0.1/30")
    try:
        return ip_interface(text)
    except ValueError as exc:
        raise TunnelConfigError(f"{what}: {exc}") from None


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TunnelConfigError(f"{what} must be an integer, not {value!r}")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TunnelConfigError(f"{what} must be true or false, not {value!r}")
    return value


_KEYS: Final = frozenset(
    {"name", "local", "remote", "key", "checksum", "sequence", "ttl", "underlay_mtu", "addresses"}
)


def tunnel_from_mapping(table: Mapping[str, Any]) -> TunnelConfig:
    name = table.get("name")
    where = f"tunnel {name!r}"
    unknown = set(table) - _KEYS
    if unknown:
        raise TunnelConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    for required in ("name", "local", "remote"):
        if required not in table:
            raise TunnelConfigError(f"{where}: missing {required!r}")
    if not isinstance(name, str):
        raise TunnelConfigError(f"tunnel name must be a string, not {name!r}")
    addresses = table.get("addresses", [])
    if not isinstance(addresses, list):
        raise TunnelConfigError(f"{where}: addresses must be a list")
    key = table.get("key")
    return TunnelConfig(
        name=name,
        local=_address(table["local"], f"{where} local"),
        remote=_address(table["remote"], f"{where} remote"),
        key=None if key is None else _int(key, f"{where} key"),
        checksum=_bool(table.get("checksum", False), f"{where} checksum"),
        sequence=_bool(table.get("sequence", False), f"{where} sequence"),
        ttl=_int(table.get("ttl", 64), f"{where} ttl"),
        underlay_mtu=_int(table.get("underlay_mtu", 1500), f"{where} underlay_mtu"),
        addresses=tuple(_interface(a, f"{where} address") for a in addresses),
    )


def check_set(tunnels: Iterable[TunnelConfig]) -> tuple[TunnelConfig, ...]:
    """Tunnels that one process can serve together: distinct names and distinct (local, remote, key)."""
    result = tuple(tunnels)
    names: set[str] = set()
    demux: set[tuple[IPAddress, IPAddress, int | None]] = set()
    for t in result:
        if t.name in names:
            raise TunnelConfigError(f"tunnel name {t.name} is used twice")
        names.add(t.name)
        ident = (t.local, t.remote, t.key)
        if ident in demux:
            raise TunnelConfigError(
                f"{t.name}: another tunnel has the same local {t.local}, remote {t.remote} and key {t.key}"
            )
        demux.add(ident)
    return result


def load_toml(text: str) -> tuple[str, tuple[TunnelConfig, ...]]:
    """Parse a tunnels file; returns (mode, tunnels)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TunnelConfigError(f"tunnels file: {exc}") from None
    unknown = set(doc) - {"mode", "tunnel"}
    if unknown:
        raise TunnelConfigError(f"tunnels file: unknown top-level setting(s) {', '.join(sorted(unknown))}")
    mode = doc.get("mode", "auto")
    if mode not in MODES:
        raise TunnelConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    tables = doc.get("tunnel", [])
    if not isinstance(tables, list) or not tables:
        raise TunnelConfigError("tunnels file: no [[tunnel]] tables")
    return mode, check_set(tunnel_from_mapping(t) for t in tables)
