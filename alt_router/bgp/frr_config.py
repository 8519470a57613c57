"""Render the configuration of a node's own FRR instance (``[node] bgp = "frr"``, issue 10), pure.

In FRR mode FRR's bgpd is the ALT's BGP speaker and zebra installs the ALT routes in the kernel
(the node's network namespace, or a kernel VRF where the host has one).  This module turns the
node's config (described by the small protocols below, as in ``exabgp_config``: this package must
not import ``alt_router.node``) into two texts, one per daemon, plus the vtysh commands that add or
remove an originated prefix at run time, and reads the peer states out of FRR's summary JSON.

The filters are the ExaBGP mode's, enforced by bgpd itself:

* outside the EID space: an inbound route-map per family that permits only ``[eid].accept``
  (``le 32`` / ``le 128``) and drops the rest;
* own ASN: FRR drops a route whose AS_PATH holds its own AS (RFC 4271 §9.1.2) by default, which
  is the loop check the ALT relies on; ``allowas-in`` is deliberately never rendered;
* max-prefix: ``maximum-prefix N restart 1`` per family (FRR counts per address family; the
  ExaBGP mode counts a peer's routes across families).  FRR sends a Cease (subcode 1, RFC 4486)
  and keeps the session down for a minute; the ExaBGP mode's teardown lets the peer reconnect at
  once, but a peer that keeps overflowing would then flap continuously;
* MD5: ``neighbor X password`` (RFC 2385, the kernel's TCP-MD5 as in the ExaBGP mode).

Originated prefixes (``[eid].announce``, ``always`` aggregates and the Map-Server's site prefixes)
are ``network`` statements under ``no bgp network import-check``: their routes live in the kernel
as ``local`` routes the node installs for the Map-Server, or nowhere, and BGP must announce them
either way.  Aggregates are ``aggregate-address`` (``summary-only``, ``as-set`` as configured):
FRR originates one while a more-specific is in its table, as ``alt_router.rib.aggregate`` does.

A reload (SIGHUP) applies the difference between two rendered bgpd configs through vtysh
(``bgpd_changes``), as frr-reload.py does for an integrated config: only the sessions it touches
reset.  Our ASN, VRF, router-id and the other router-wide settings cannot change under a running
bgpd without resetting every session anyway, so a change there asks for a bgpd restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from alt_router.bgp.exabgp_config import LocalNode, Neighbor
from alt_router.rib.aggregate import AggregateSpec
from alt_router.types import Prefix

EID_V4 = "ALT-EID-V4"
EID_V6 = "ALT-EID-V6"
IN_V4 = "ALT-IN-V4"
IN_V6 = "ALT-IN-V6"
OUT = "ALT-OUT"
# Minutes a session stays down after a max-prefix overflow before bgpd lets it up again.
MAX_PREFIX_RESTART = 1
ESTABLISHED = "Established"
CONNECT_RETRY = 5


class FrrConfigError(ValueError):
    """The node configuration cannot be expressed as an FRR configuration."""


class FrrNeighbor(Neighbor, Protocol):
    @property
    def max_prefix(self) -> int: ...


class EidSpace(Protocol):
    @property
    def announce(self) -> Sequence[Prefix]: ...
    @property
    def accept(self) -> Sequence[Prefix]: ...
    @property
    def aggregates(self) -> Sequence[AggregateSpec]: ...


class FrrSpeaker(Protocol):
    """What the rendered configuration says: the node, its peers, its EID space and originations."""

    @property
    def node(self) -> LocalNode: ...
    @property
    def peers(self) -> Sequence[FrrNeighbor]: ...
    @property
    def eid(self) -> EidSpace: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FrrConfig:
    """One text per daemon: zebra does not know bgpd's commands and logs each as an error."""

    zebra: str
    bgpd: str


def _word(value: str, what: str) -> str:
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise FrrConfigError(f"{what} {value!r} must be one word of printable characters for FRR")
    return value


def _line(value: str, what: str) -> str:
    if any(not c.isprintable() for c in value):
        raise FrrConfigError(f"{what} {value!r} contains a control character")
    return value


def _afi(prefix: Prefix) -> str:
    return f"ipv{prefix.version}"


def router_line(asn: int, vrf: str | None) -> str:
    return f"router bgp {asn}" + (f" vrf {_word(vrf, 'frr.vrf')}" if vrf else "")


def _prefix_lists(accept: Sequence[Prefix]) -> list[str]:
    lines: list[str] = []
    for version, keyword, name, top in ((4, "ip", EID_V4, 32), (6, "ipv6", EID_V6, 128)):
        space = [p for p in accept if p.version == version]
        for seq, p in enumerate(space, start=1):
            le = f" le {top}" if p.prefixlen < top else ""
            lines.append(f"{keyword} prefix-list {name} seq {seq * 5} permit {p}{le}")
        if not space:
            # A route-map matching a prefix-list that does not exist would match everything.
            lines.append(f"{keyword} prefix-list {name} seq 5 deny any")
    return lines


def _route_maps() -> list[str]:
    # Without a permit entry a route-map denies: routes outside the EID space are dropped in.
    return [
        f"route-map {IN_V4} permit 10",
        f" match ip address prefix-list {EID_V4}",
        "exit",
        f"route-map {IN_V6} permit 10",
        f" match ipv6 address prefix-list {EID_V6}",
        "exit",
        # Transit: everything the node has goes out (bgpd's own AS-path check keeps a route away
        # from a peer whose AS is already in it).
        f"route-map {OUT} permit 10",
        "exit",
    ]


def _neighbor_lines(peer: FrrNeighbor) -> list[str]:
    local, remote = peer.tunnel.session
    desc = _line(peer.description or f"ALT peer {peer.name}", f"peers.{peer.name}.description")
    hold = peer.hold_time
    lines = [
        f" neighbor {remote} remote-as {peer.asn}",
        f" neighbor {remote} description {desc}",
        # The session runs between the tunnel's inner addresses, never the underlay's.
        f" neighbor {remote} update-source {local}",
        f" neighbor {remote} timers {hold // 3} {hold}",
        # FRR waits 120 s after a failed connect by default: a SYN sent before the peer's tunnel
        # was up would keep the session down for two minutes after every restart.
        f" neighbor {remote} timers connect {CONNECT_RETRY}",
    ]
    if peer.md5_password is not None:
        password = _word(peer.md5_password, f"peers.{peer.name}.md5_password")
        lines.append(f" neighbor {remote} password {password}")
    return lines


def _family_block(afi: str, config: FrrSpeaker, originate: Sequence[Prefix]) -> list[str]:
    version = 4 if afi == "ipv4" else 6
    peers = [p for p in config.peers if afi in p.families]
    networks = [p for p in originate if p.version == version]
    aggregates = [a for a in config.eid.aggregates if a.prefix.version == version]
    if not (peers or networks or aggregates):
        return []
    lines = [f" address-family {afi} unicast"]
    lines += [f"  network {p}" for p in networks]
    for agg in aggregates:
        opts = (" summary-only" if agg.summary_only else "") + (" as-set" if agg.as_set else "")
        lines.append(f"  aggregate-address {agg.prefix}{opts}")
    route_in = IN_V4 if version == 4 else IN_V6
    for peer in peers:
        remote = peer.tunnel.session[1]
        if peer.max_prefix < 1:
            raise FrrConfigError(f"peers.{peer.name}.max_prefix must be at least 1 for FRR")
        lines += [
            f"  neighbor {remote} activate",
            f"  neighbor {remote} route-map {route_in} in",
            f"  neighbor {remote} route-map {OUT} out",
            f"  neighbor {remote} maximum-prefix {peer.max_prefix} restart {MAX_PREFIX_RESTART}",
        ]
    lines.append(" exit-address-family")
    return lines


def originated(config: FrrSpeaker, extra: Iterable[Prefix] = ()) -> list[Prefix]:
    """The ``network`` statements: ``[eid].announce``, ``always`` aggregates and ``extra`` (run time).

    An ``always`` aggregate is also a ``network``: FRR's ``aggregate-address`` is active only
    while a more-specific is in its table, and ``always`` means without one too.
    """
    out = {*config.eid.announce, *extra, *(a.prefix for a in config.eid.aggregates if a.always)}
    return sorted(out, key=lambda p: (p.version, p))


def render_frr_config(
    config: FrrSpeaker, *, vrf: str | None = None, extra: Iterable[Prefix] = (),
) -> FrrConfig:
    """The zebra and bgpd configurations for ``config``; ``extra``: prefixes originated at run time."""
    name = _word(config.node.name, "node.name")
    header = [
        f"! FRR configuration for ALT node {name} (AS {config.node.asn}),",
        f"! rendered by alt-router from {_line(config.source, 'source')}.  Edit that file, not this one.",
        "frr defaults traditional",
        f"hostname {name}-alt",
        "!",
    ]
    # zebra owns the forwarding switches: the kernel forwards the ALT datagrams in this mode.
    zebra = [*header, "ip forwarding", "ipv6 forwarding", "!"]
    router_id = config.node.router_id
    if not isinstance(router_id, IPv4Address):
        raise FrrConfigError(f"node.router_id {router_id} is not an IPv4 address")
    bgpd = [*header, *_prefix_lists(config.eid.accept), "!", *_route_maps(), "!",
            router_line(config.node.asn, vrf),
            f" bgp router-id {router_id}",
            " bgp log-neighbor-changes",
            # Explicit route-maps on every session; keep FRR's RFC 8212 default on as a safety net.
            " bgp ebgp-requires-policy",
            # Only what the families below activate.
            " no bgp default ipv4-unicast",
            # Originated prefixes need no route in zebra's table (module docstring).
            " no bgp network import-check"]
    for peer in config.peers:
        bgpd += _neighbor_lines(peer)
    networks = originated(config, extra)
    for afi in ("ipv4", "ipv6"):
        bgpd += _family_block(afi, config, networks)
    bgpd += ["exit", "!"]
    return FrrConfig("\n".join(zebra) + "\n", "\n".join(bgpd) + "\n")


def network_commands(asn: int, vrf: str | None, prefix: Prefix, *, withdraw: bool = False) -> list[str]:
    """vtysh ``-c`` commands that add (or remove) the ``network`` statement for ``prefix``."""
    return ["configure terminal", router_line(asn, vrf), f"address-family {_afi(prefix)} unicast",
            f"{'no ' if withdraw else ''}network {prefix}"]


def show_vrf(vrf: str | None) -> str:
    return f"vrf {_word(vrf, 'frr.vrf')}" if vrf else "vrf default"


def peer_states(summary: Mapping[str, Any]) -> dict[str, str]:
    """Neighbor address -> BGP state from ``show bgp vrf X summary json`` (every family).

    A neighbor carrying two families is Established only if every family says so (FRR reports
    the same session in each).  Unexpected shapes give no entries, never an exception: FRR's
    JSON changes between releases.
    """
    states: dict[str, str] = {}
    for family in summary.values():
        peers = family.get("peers") if isinstance(family, dict) else None
        if not isinstance(peers, dict):
            continue
        for address, info in peers.items():
            state = info.get("state") if isinstance(info, dict) else None
            if not isinstance(state, str):
                continue
            if states.get(address, ESTABLISHED) == ESTABLISHED:
                states[address] = state
    return states


def as_path(route: Mapping[str, Any]) -> list[list[int]]:
    """The AS paths of each path in ``show bgp vrf X <prefix> json`` (best path first)."""
    paths = route.get("paths")
    if not isinstance(paths, list):
        return []
    out: list[tuple[bool, list[int]]] = []
    for path in paths:
        if not isinstance(path, dict):
            continue
        segments = path.get("aspath", {})
        text = segments.get("string", "") if isinstance(segments, dict) else ""
        asns = [int(t) for t in str(text).replace("{", " ").replace("}", " ").replace(",", " ").split()
                if t.isdigit()]
        best = path.get("bestpath", {})
        out.append((bool(best.get("overall")) if isinstance(best, dict) else False, asns))
    out.sort(key=lambda item: not item[0])
    return [asns for _, asns in out]


# --- reload: the difference between two rendered bgpd configs, as vtysh commands -----------------

# Neighbor settings of which a neighbor has at most one: the new line replaces the old one in bgpd
# (no ``no`` needed), keyed by the words after the address.  ``route-map NAME in`` keys on its
# direction, ``timers connect`` apart from ``timers``.
_ONE_PER_NEIGHBOR = frozenset({"remote-as", "description", "update-source", "timers", "password",
                               "maximum-prefix"})
# The session only learns these at its next OPEN (RFC 4271 §4.2: the hold time is negotiated
# there): the touched session is reset so the new value applies now, as the config says.
_RESET_AFTER = frozenset({"timers"})

Context = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FrrChange:
    """What a reload changes in a running bgpd (``bgpd_changes``).

    ``restart``: why the change cannot be applied live (bgpd must restart, every session resets);
    None when it can.  ``configure``: one vtysh run (``-c`` each) that applies it; ``clear``: one
    vtysh run after it, the session resets and route refreshes the change needs.  ``touched``:
    the neighbors whose configuration changed (added and removed ones included).
    """

    configure: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()
    touched: tuple[str, ...] = ()
    restart: str | None = None
    filters: bool = False  # the inbound filters (prefix-lists, route-maps) changed

    @property
    def blocks(self) -> list[list[str]]:
        """The vtysh runs, in order (each a list of ``-c`` commands)."""
        return [list(b) for b in (self.configure, self.clear) if b]

    @property
    def empty(self) -> bool:
        return self.restart is None and not self.configure and not self.clear


@dataclass(slots=True)
class _Parsed:
    contexts: dict[Context, list[str]] = field(default_factory=dict)

    def router(self) -> str | None:
        return next((c[0] for c in self.contexts if len(c) == 1 and c[0].startswith("router bgp ")), None)


def _parse(text: str) -> _Parsed:
    """A rendered bgpd config as context -> lines (stripped, comments dropped).

    Contexts: ``()`` for the top level, ``(route-map ...)``, ``(router bgp ...)`` and
    ``(router bgp ..., address-family ...)``; the shape ``render_frr_config`` writes.
    """
    parsed = _Parsed({(): []})
    stack: Context = ()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if line == "exit-address-family":
            stack = stack[:1]
        elif line == "exit":
            stack = ()
        elif not stack and line.startswith(("route-map ", "router bgp ")):
            stack = (line,)
            parsed.contexts.setdefault(stack, [])
        elif len(stack) == 1 and stack[0].startswith("router bgp ") and line.startswith("address-family "):
            stack = (stack[0], line)
            parsed.contexts.setdefault(stack, [])
        else:
            parsed.contexts.setdefault(stack, []).append(line)
    return parsed


def _neighbor(line: str) -> str | None:
    words = line.split()
    return words[1] if len(words) > 2 and words[0] == "neighbor" else None


def _key(line: str) -> str:
    """Lines with the same key set the same thing: a new line replaces the old one in FRR."""
    words = line.split()
    if words[0] in ("ip", "ipv6") and words[1:2] == ["prefix-list"] and words[3:4] == ["seq"]:
        return " ".join(words[:5])  # the entry is keyed by its sequence number
    if words[0] == "hostname":
        return "hostname"
    if words[0] == "aggregate-address":
        return " ".join(words[:2])  # bgpd replaces an aggregate's options in place
    if _neighbor(line) is not None:
        what = words[2]
        if what == "timers" and words[3:4] == ["connect"]:
            return " ".join(words[:4])
        if what == "route-map":
            return f"neighbor {words[1]} route-map {words[-1]}"
        if what in _ONE_PER_NEIGHBOR:
            return " ".join(words[:3])
    return line


def _context_commands(old: list[str], new: list[str], gone: set[str]) -> list[str]:
    """Commands that turn ``old`` into ``new`` inside one context (entered by the caller).

    New and changed lines first, in rendered order (a prefix-list is never empty in between), then
    ``no`` for settings that are gone, in reverse order (undo the last first).  Lines of a
    neighbor that is removed as a whole (``gone``) are left to its ``no neighbor``.
    """
    new_keys = {_key(line) for line in new}
    old_set = set(old)
    out = [line for line in new if line not in old_set]
    for line in reversed(old):
        if _neighbor(line) in gone or _key(line) in new_keys:
            continue
        out.append(f"no {line}")
    return out


def _restart_reason(old: _Parsed, new: _Parsed) -> str | None:
    old_router, new_router = old.router(), new.router()
    if old_router is None or new_router is None:
        return "no 'router bgp' in the old or the new configuration"
    if old_router != new_router:
        return f"our ASN or VRF changed ({old_router!r} -> {new_router!r})"
    defaults = [[line for line in p.contexts[()] if line.startswith("frr ")] for p in (old, new)]
    if defaults[0] != defaults[1]:
        return f"FRR defaults changed ({defaults[0]} -> {defaults[1]})"
    settings = [[line for line in p.contexts[(old_router,)] if _neighbor(line) is None] for p in (old, new)]
    if settings[0] != settings[1]:
        ids = [[line for line in s if line.startswith("bgp router-id ")] for s in settings]
        if ids[0] != ids[1]:
            return f"router-id changed ({' '.join(ids[0])!r} -> {' '.join(ids[1])!r})"
        changed = sorted(set(settings[0]) ^ set(settings[1]))
        return f"router-wide BGP settings changed: {', '.join(changed)}"
    return None


def _vrf_of(router: str) -> str | None:
    words = router.split()
    return words[4] if len(words) >= 5 and words[3] == "vrf" else None


def bgpd_changes(old: str, new: str) -> FrrChange:
    """The vtysh commands that turn a running bgpd from config ``old`` into ``new`` (both rendered
    by ``render_frr_config``), or the reason only a restart can.

    Applied live: prefix-lists and route-maps (then a route refresh, ``soft in``, of every
    session in the family whose filter changed, so routes now outside ``[eid].accept`` go and
    ones now inside come: RFC 2918 route refresh, which FRR speaks by default), ``network`` and
    ``aggregate-address`` lines, neighbors added (``neighbor X remote-as ...`` and the rest),
    removed (``no neighbor X``: bgpd closes that session with a Cease) or changed.  bgpd itself
    resets a session whose password, remote-as, update-source or families change; a changed
    hold time only applies from the next OPEN, so that session is cleared.  Every other session
    stays up.  Our ASN, VRF, router-id and the other router-wide settings: restart.
    """
    a, b = _parse(old), _parse(new)
    reason = _restart_reason(a, b)
    if reason is not None:
        return FrrChange(restart=reason)
    router = b.router()
    assert router is not None  # checked by _restart_reason
    old_neighbors = {n for line in a.contexts[(router,)] if (n := _neighbor(line)) is not None}
    new_neighbors = {n for line in b.contexts[(router,)] if (n := _neighbor(line)) is not None}
    gone = old_neighbors - new_neighbors
    added = new_neighbors - old_neighbors
    touched: set[str] = set(gone | added)
    reset: set[str] = set()
    configure: list[str] = []
    filters_v4 = filters_v6 = False

    top = _context_commands(a.contexts[()], b.contexts[()], gone)
    for command in top:
        words = command.removeprefix("no ").split()
        filters_v4 |= words[0] == "ip" and words[1:2] == ["prefix-list"]
        filters_v6 |= words[0] == "ipv6" and words[1:2] == ["prefix-list"]
    configure += top
    route_maps = sorted({c for p in (a, b) for c in p.contexts if c and c[0].startswith("route-map ")})
    for context in route_maps:
        before, after = a.contexts.get(context), b.contexts.get(context)
        if before == after:
            continue
        filters_v4 = filters_v6 = True
        if after is None:
            configure.append(f"no {context[0]}")
            continue
        configure += [context[0], *_context_commands(before or [], after, gone), "exit"]

    router_commands = [f"no neighbor {n}" for n in sorted(gone)]
    router_commands += _context_commands(a.contexts[(router,)], b.contexts[(router,)], gone)
    families = sorted({c for p in (a, b) for c in p.contexts if len(c) == 2 and c[0] == router})
    for context in families:
        commands = _context_commands(a.contexts.get(context, []), b.contexts.get(context, []), gone)
        if commands:
            router_commands += [context[1], *commands, "exit-address-family"]
    for command in router_commands:
        line = command.removeprefix("no ")
        neighbor = _neighbor(line)
        if neighbor is not None:
            touched.add(neighbor)
            if line.split()[2] in _RESET_AFTER and neighbor not in added:
                reset.add(neighbor)
    if router_commands:
        configure += [router, *router_commands, "exit"]

    clear: list[str] = []
    vrf = show_vrf(_vrf_of(router))
    clear += [f"clear bgp {vrf} {n}" for n in sorted(reset)]
    for afi, changed in (("ipv4", filters_v4), ("ipv6", filters_v6)):
        context = (router, f"address-family {afi} unicast")
        active = sorted({n for line in b.contexts.get(context, []) if (n := _neighbor(line)) is not None}
                        - added - reset)
        if changed:
            clear += [f"clear bgp {vrf} {afi} unicast {n} soft in" for n in active]
    return FrrChange(
        configure=("configure terminal", *configure) if configure else (),
        clear=tuple(clear),
        touched=tuple(sorted(touched, key=_address_order)),
        filters=filters_v4 or filters_v6,
    )


def _address_order(address: str) -> tuple[int, str]:
    return (":" in address, address)
