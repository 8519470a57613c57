"""What a changed node config means for a running node (pure): applied at run time, or needs a restart.

``plan(old, new)`` compares two validated configs.  Applied live (SIGHUP):
``[eid].announce`` added and removed (the daemon re-renders ExaBGP's config and
sends ExaBGP SIGUSR1, its reload signal: ExaBGP keeps every session whose
neighbor definition is unchanged and sends only the route delta).  Everything
else is listed in ``restart`` with the key that changed, so the operator knows
what a ``systemctl restart`` would still pick up; nothing is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from alt_router.node.config import NodeConfig, Prefix


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    announce: tuple[Prefix, ...] = ()
    withdraw: tuple[Prefix, ...] = ()
    restart: tuple[str, ...] = ()  # "peers: added x" ... one reason per changed key

    @property
    def live_changes(self) -> bool:
        return bool(self.announce or self.withdraw)

    def summary(self) -> str:
        parts = []
        if self.announce:
            parts.append("announce " + ", ".join(map(str, self.announce)))
        if self.withdraw:
            parts.append("withdraw " + ", ".join(map(str, self.withdraw)))
        applied = "; ".join(parts) or "nothing to apply"
        if self.restart:
            return f"{applied}; needs a restart: {'; '.join(self.restart)}"
        return applied


def plan(old: NodeConfig, new: NodeConfig) -> ReloadPlan:
    restart: list[str] = []
    for f in fields(old.node):
        if getattr(old.node, f.name) != getattr(new.node, f.name):
            restart.append(f"node.{f.name} changed")
    if old.eid.accept != new.eid.accept:
        restart.append("eid.accept changed")
    old_peers = {p.name: p for p in old.peers}
    new_peers = {p.name: p for p in new.peers}
    added = sorted(new_peers.keys() - old_peers.keys())
    removed = sorted(old_peers.keys() - new_peers.keys())
    changed = sorted(n for n in old_peers.keys() & new_peers.keys() if old_peers[n] != new_peers[n])
    if added:
        restart.append(f"peers added: {', '.join(added)}")
    if removed:
        restart.append(f"peers removed: {', '.join(removed)}")
    if changed:
        restart.append(f"peers changed: {', '.join(changed)}")
    for section in ("exabgp", "api", "map_resolver", "map_server", "etr"):
        if getattr(old, section) != getattr(new, section):
            restart.append(f"[{section}] changed")
    old_ann, new_ann = set(old.eid.announce), set(new.eid.announce)
    return ReloadPlan(
        announce=tuple(p for p in new.eid.announce if p not in old_ann),
        withdraw=tuple(p for p in old.eid.announce if p not in new_ann),
        restart=tuple(restart),
    )
