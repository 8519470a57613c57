"""What a changed node config means for a running node (pure): applied at run time, or needs a restart.

``plan(old, new)`` compares two validated configs.  Applied live (SIGHUP), in both modes:

- ``[eid].announce`` added and removed;
- ``[[peers]]`` added and removed (userspace GRE only: the tunnel is made or
  deleted in this process; kernel GRE tunnels need a restart), and a peer whose
  only change is ``max_prefix`` (a RIB policy, no session reset);
- ``[[map_server.sites]]`` added, removed or changed, while the Map-Server stays enabled.

The ExaBGP mode re-renders ExaBGP's config and sends ExaBGP SIGUSR1, its reload
signal: ExaBGP keeps every session whose neighbor definition is unchanged, opens
the new ones, closes the removed ones and sends only the route delta.

The FRR-integrated mode (``[node] bgp = "frr"``) hands the whole applied config to
``FrrMode.reload``, which re-renders bgpd's config and sends bgpd the difference
through vtysh (``bgp.frr_config.bgpd_changes``), per session.  So there a peer's
``md5_password``, ``asn``, ``hold_time``, ``families`` and ``description`` are live too
(``FRR_LIVE_PEER_KEYS``: bgpd resets only that session), and so is ``[eid].accept``
(bgpd's inbound prefix-lists, then a route refresh; the node's import policy and
Map-Resolver follow).  A peer's tunnel (``underlay``, ``tunnel``, ``key``) is still
a tunnel change, and ``[frr]`` and ``[eid].aggregates`` need a restart: the FRR
instance and the node's aggregator are made at start.

Everything else is listed in ``restart`` with the key that changed, so the
operator knows what a ``systemctl restart`` would still pick up; nothing is
half-applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from alt_router.node.config import NodeConfig, PeerConfig, SiteConfig
from alt_router.types import Prefix

# Peer settings a running node applies without touching the session.
LIVE_PEER_KEYS = frozenset({"max_prefix"})
# FRR mode: peer settings bgpd takes through vtysh, resetting at most that one session (a password,
# remote-as or family change resets it, RFC 2385 / RFC 4271 §4.2; a hold time applies from the next
# OPEN, so that session is cleared).  The tunnel keys are not among them: the TUN device and its
# addresses are the tunnel's.
FRR_LIVE_PEER_KEYS = LIVE_PEER_KEYS | frozenset(
    {"asn", "md5_password", "hold_time", "families", "description"})
# Sections whose change needs a restart in every mode (the Map-Server's sites excepted, see plan).
SECTIONS = ("exabgp", "api", "map_resolver", "map_server", "etr")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    announce: tuple[Prefix, ...] = ()
    withdraw: tuple[Prefix, ...] = ()
    peers_added: tuple[PeerConfig, ...] = ()
    peers_removed: tuple[str, ...] = ()
    peers_updated: tuple[PeerConfig, ...] = ()  # only the mode's live peer keys differ
    sites: tuple[SiteConfig, ...] | None = None  # the new Map-Server sites, when they changed
    sites_changed: tuple[str, ...] = ()  # names of the sites added, removed or changed
    accept: tuple[Prefix, ...] | None = None  # the new [eid].accept, when it changed live (FRR mode)
    restart: tuple[str, ...] = ()  # "peers changed: x" ... one reason per changed key

    @property
    def live_changes(self) -> bool:
        return bool(self.announce or self.withdraw or self.peers_changed or self.sites is not None
                    or self.accept is not None)

    @property
    def peers_changed(self) -> bool:
        """The peer set changed, so ExaBGP's neighbors did."""
        return bool(self.peers_added or self.peers_removed)

    def summary(self) -> str:
        parts = []
        if self.announce:
            parts.append("announce " + ", ".join(map(str, self.announce)))
        if self.withdraw:
            parts.append("withdraw " + ", ".join(map(str, self.withdraw)))
        if self.peers_added:
            parts.append("peers added " + ", ".join(p.name for p in self.peers_added))
        if self.peers_removed:
            parts.append("peers removed " + ", ".join(self.peers_removed))
        if self.peers_updated:
            parts.append("peers updated " + ", ".join(p.name for p in self.peers_updated))
        if self.sites_changed:
            parts.append("map-server sites " + ", ".join(self.sites_changed))
        if self.accept is not None:
            parts.append("eid.accept " + ", ".join(map(str, self.accept)))
        applied = "; ".join(parts) or "nothing to apply"
        if self.restart:
            return f"{applied}; needs a restart: {'; '.join(self.restart)}"
        return applied


def plan(old: NodeConfig, new: NodeConfig) -> ReloadPlan:
    # The running mode decides; a changed [node] bgp is itself a restart reason below.
    frr = old.node.bgp == "frr"
    restart: list[str] = []
    for f in fields(old.node):
        if getattr(old.node, f.name) != getattr(new.node, f.name):
            restart.append(f"node.{f.name} changed")
    accept: tuple[Prefix, ...] | None = None
    if old.eid.accept != new.eid.accept:
        if frr:
            accept = new.eid.accept
        else:
            restart.append("eid.accept changed")
    if frr and old.eid.aggregates != new.eid.aggregates:
        restart.append("eid.aggregates changed")
    old_peers = {p.name: p for p in old.peers}
    new_peers = {p.name: p for p in new.peers}
    added = [p for p in new.peers if p.name not in old_peers]
    removed = [p.name for p in old.peers if p.name not in new_peers]
    changed = sorted(n for n in old_peers.keys() & new_peers.keys() if old_peers[n] != new_peers[n])
    live_keys = FRR_LIVE_PEER_KEYS if frr else LIVE_PEER_KEYS
    updated = [new_peers[n] for n in changed if _only_keys(old_peers[n], new_peers[n], live_keys)]
    changed = [n for n in changed if n not in {p.name for p in updated}]
    if (added or removed) and "kernel" in (old.node.tunnel_mode, new.node.tunnel_mode):
        # Kernel GRE tunnels are made by the start-up code only.
        names = ", ".join([p.name for p in added] + removed)
        restart.append(f"peers added/removed with kernel GRE tunnels: {names}")
        added, removed = [], []
    if changed:
        restart.append(f"peers changed: {', '.join(changed)}")
    sites: tuple[SiteConfig, ...] | None = None
    sites_changed: list[str] = []
    for section in (*SECTIONS, "frr") if frr else SECTIONS:
        if getattr(old, section) == getattr(new, section):
            continue
        if section == "map_server" and old.map_server.enabled and new.map_server.enabled:
            sites = new.map_server.sites
            sites_changed = _sites_changed(old.map_server.sites, new.map_server.sites)
            continue
        restart.append(f"[{section}] changed")
    old_ann, new_ann = set(old.eid.announce), set(new.eid.announce)
    return ReloadPlan(
        announce=tuple(p for p in new.eid.announce if p not in old_ann),
        withdraw=tuple(p for p in old.eid.announce if p not in new_ann),
        peers_added=tuple(added),
        peers_removed=tuple(removed),
        peers_updated=tuple(updated),
        sites=sites,
        sites_changed=tuple(sites_changed),
        accept=accept,
        restart=tuple(restart),
    )


def _only_keys(old: PeerConfig, new: PeerConfig, keys: frozenset[str]) -> bool:
    replaced = dataclasses.replace(old, **{k: getattr(new, k) for k in keys})
    return replaced == new


def _sites_changed(old: tuple[SiteConfig, ...], new: tuple[SiteConfig, ...]) -> list[str]:
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
