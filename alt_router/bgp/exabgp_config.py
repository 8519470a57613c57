"""Render the ExaBGP 5.0 configuration for a node (pure: a ``Speaker`` in, text out).

One neighbor per tunnel peer, on the tunnel's inner addresses (IPv4 when the
tunnel has them, else IPv6), carrying ipv4 unicast and/or ipv6 unicast as the
peer's ``families`` say.  The node's ``[eid].announce`` prefixes go out as static
routes; the API process (the bridge the edge runs) receives parsed updates,
OPENs, route refreshes, notifications and neighbor state changes as JSON.

Choices checked against ExaBGP 5.0.15 and FRR 8.4 in the lab:

* ``next-hop self`` is refused for an IPv6 prefix on an IPv4 session, so IPv6
  routes carry the tunnel's local IPv6 address, or ``::ffff:`` + the local IPv4
  address when the tunnel has no IPv6.
* ``capability { route-refresh; }`` is enough for enhanced route refresh: FRR
  answered our refresh request with BoRR ... EoRR, which the RIB sweeps on.
* No graceful-restart: with it negotiated, ExaBGP's ``teardown`` closes the TCP
  session without sending a NOTIFICATION and the peer keeps our routes as stale,
  which defeats a max-prefix teardown (without it FRR logged Cease 6/1 as it
  should).  The price: FRR 8.4 sends End-of-RIB only when graceful-restart is
  negotiated, so FRR peers send no EoR here.  The RIB needs EoR only to sweep
  after a restart it did not see as a down, so the edge must report every
  session (and ExaBGP process) loss as ``peer_down``.

The input is described by the small protocols below (``Speaker``, ``Neighbor``...), not by the
node's config classes: this package is part of the core and must not import ``alt_router.node``
(tests/test_layers.py).  The node's ``NodeConfig`` and ``PeerConfig`` satisfy them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol

from alt_router.types import IPAddress, Prefix

DEFAULT_PROCESS = "alt-router"
BGP_PORT = 179
_FORBIDDEN = set('"\\;{}\n\r\t')


class TunnelAddresses(Protocol):
    """The inner addresses of a peer's tunnel, which the BGP session runs between."""

    @property
    def session(self) -> tuple[IPAddress, IPAddress]: ...  # (local, remote)
    @property
    def local_ipv4(self) -> IPv4Interface | None: ...
    @property
    def local_ipv6(self) -> IPv6Interface | None: ...


class Neighbor(Protocol):
    """One BGP peer, as far as ExaBGP's ``neighbor`` block needs it."""

    @property
    def name(self) -> str: ...
    @property
    def asn(self) -> int: ...
    @property
    def tunnel(self) -> TunnelAddresses: ...
    @property
    def families(self) -> Sequence[str]: ...  # "ipv4", "ipv6"
    @property
    def hold_time(self) -> int: ...
    @property
    def md5_password(self) -> str | None: ...
    @property
    def description(self) -> str: ...


class LocalNode(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def asn(self) -> int: ...
    @property
    def router_id(self) -> IPv4Address: ...


class StaticRoutes(Protocol):
    @property
    def announce(self) -> Sequence[Prefix]: ...


class Speaker(Protocol):
    """Everything the rendered configuration says: the local node, its peers, its static routes."""

    @property
    def node(self) -> LocalNode: ...
    @property
    def peers(self) -> Sequence[Neighbor]: ...
    @property
    def eid(self) -> StaticRoutes: ...
    @property
    def source(self) -> str: ...  # where the node's config came from, for the header comment


class ExabgpConfigError(ValueError):
    """The node configuration cannot be expressed as an ExaBGP configuration."""


def _check_word(value: str, what: str) -> str:
    if not value or any(c in _FORBIDDEN or (c.isspace() and c != " ") for c in value):
        raise ExabgpConfigError(f"{what} {value!r} contains a character ExaBGP's parser cannot take "
                                "(quote, backslash, ';', braces or a control character)")
    return value


def _quote(value: str) -> str:
    return '"' + value + '"'


STOP_GRACE_BASE = 5.0
STOP_GRACE_PER_100K_ROUTES = 2.0
STOP_GRACE_MAX = 120.0


def exabgp_stop_grace(routes: int) -> float:
    """Seconds to let ExaBGP close its sessions after SIGTERM before SIGKILL, for a RIB of ``routes``.

    ExaBGP with a large table takes longer than the default 5 s to stop (it tears its
    per-route state down), and a SIGKILL skips the Cease that tells the peers to
    withdraw our routes at once, so the grace grows with the table, within bounds.
    """
    extra = max(routes, 0) / 100_000 * STOP_GRACE_PER_100K_ROUTES
    return min(STOP_GRACE_MAX, STOP_GRACE_BASE + extra)


def next_hop_for(peer: Neighbor, prefix: Prefix) -> str:
    """The ``next-hop`` to announce ``prefix`` with to ``peer`` (see the module docstring)."""
    session_local, _ = peer.tunnel.session
    if prefix.version == session_local.version:
        return "self"
    if prefix.version == 6:
        if peer.tunnel.local_ipv6 is not None:
            return str(peer.tunnel.local_ipv6.ip)
        assert isinstance(session_local, IPv4Address)
        return str(IPv6Address(f"::ffff:{session_local}"))
    if peer.tunnel.local_ipv4 is not None:
        return str(peer.tunnel.local_ipv4.ip)
    raise ExabgpConfigError(
        f"peer {peer.name}: no IPv4 tunnel address to use as next hop for IPv4 prefix {prefix}"
    )


def _neighbor(config: Speaker, peer: Neighbor, process: str) -> list[str]:
    local, remote = peer.tunnel.session
    lines = [f"neighbor {remote} {{"]
    desc = peer.description or f"ALT peer {peer.name}"
    lines.append(f"    description {_quote(_check_word(desc, f'peers.{peer.name}.description'))};")
    lines += [
        f"    router-id {config.node.router_id};",
        f"    local-address {local};",
        # ExaBGP only connects out unless told to listen: two ALT nodes would never meet.
        # Per neighbor, so it binds local-address only, with this neighbor's MD5 key.
        f"    listen {BGP_PORT};",
        f"    local-as {config.node.asn};",
        f"    peer-as {peer.asn};",
        f"    hold-time {peer.hold_time};",
        # ExaBGP would otherwise keep its own copy of every received route (about 0.5 KiB each
        # and a seventh of its CPU at 1M routes): the daemon's RIB is the Adj-RIB-In.
        "    adj-rib-in false;",
    ]
    if peer.md5_password is not None:
        pw = _check_word(peer.md5_password, f"peers.{peer.name}.md5_password")
        lines.append(f"    md5-password {_quote(pw)};")
    lines.append("    family {")
    lines += [f"        {family} unicast;" for family in peer.families]
    lines.append("    }")
    lines += [
        "    capability {",
        "        route-refresh;",
        "    }",
        "    api {",
        f"        processes [ {process} ];",
        "        receive { parsed; update; refresh; notification; open; }",
        "        neighbor-changes;",
        "    }",
    ]
    routes = [p for p in config.eid.announce if f"ipv{p.version}" in peer.families]
    if routes:
        lines.append("    static {")
        lines += [f"        route {p} next-hop {next_hop_for(peer, p)};" for p in routes]
        lines.append("    }")
    lines.append("}")
    return lines


def render_exabgp_config(config: Speaker, run: str, process: str = DEFAULT_PROCESS) -> str:
    """ExaBGP configuration text for ``config``; ``run`` is the API bridge's command line."""
    _check_word(run, "run command")
    if not process.replace("-", "").replace("_", "").isalnum():
        raise ExabgpConfigError(f"process name {process!r} must be letters, digits, '-' or '_'")
    out = [
        f"# ExaBGP configuration for ALT node {config.node.name} (AS {config.node.asn}),",
        f"# rendered by alt-router from {config.source}.  Edit that file, not this one.",
        "",
        f"process {process} {{",
        f"    run {run};",
        "    encoder json;",
        "}",
    ]
    for peer in config.peers:
        out.append("")
        out += _neighbor(config, peer, process)
    return "\n".join(out) + "\n"
