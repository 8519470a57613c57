"""The node's GRE tunnels (edge): one per peer, their names, and the one place they are wired up.

Tunnel names come from here only.  A peer's tunnel is named when the node starts
(``tunnel_names``) or when a reload adds the peer (``names_for_added``), and the node keeps that
record (``Node.tunnel_names``) for the rest of its life: the engine, the forwarder and the
monitoring API all read it, so after a reload that removes a peer the API cannot show a name the
engine does not use (issue 13).  ``open_tunnels`` is the one function that wires the data path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence

from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import FastHook, InnerHook
from alt_router.gre.tunnel import Tunnels, make_tunnels
from alt_router.gre.userspace import Engine, EventSink
from alt_router.node.config import NodeConfig, PeerConfig

# The GRE data-plane thread (docs/architecture.md, "Data-plane thread") needs the GIL back after
# every syscall; while the event loop runs Python flat out, it waits up to one switch interval
# each time.  CPython's 5 ms made a packet across a busy node cost ~15 ms (p90, 3 syscalls);
# 1 ms brings that to ~1 ms, and costs nothing while the data-plane thread is idle (nobody asks
# for the GIL then).
SWITCH_INTERVAL = 0.001


def tunnel_name(peer: PeerConfig, index: int) -> str:
    """``alt-<peer>`` when that is a valid interface name, else ``alt<index>``."""
    name = f"alt-{peer.name}"
    return name if len(name) <= 15 and all(c.isalnum() or c in "-_" for c in name) else f"alt{index}"


def tunnel_names(peers: Sequence[PeerConfig]) -> dict[str, str]:
    """Peer name -> tunnel name, for the peers a node starts with."""
    return {p.name: tunnel_name(p, i) for i, p in enumerate(peers)}


def names_for_added(
    taken: Iterable[str], added: Iterable[PeerConfig], index: Mapping[str, int],
) -> dict[str, str]:
    """Names for peers a reload adds (``index``: each peer's place in the new config), avoiding ``taken``.

    The kept peers keep their names, so an index-based fallback name (``alt<i>``) of a peer that
    was removed or moved may still be in use: the next free index is taken then.
    """
    used = set(taken)
    names: dict[str, str] = {}
    for peer in added:
        j = index[peer.name]
        name = tunnel_name(peer, j)
        while name in used:
            j += 1
            name = f"alt{j}"
        used.add(name)
        names[peer.name] = name
    return names


def tunnel_config(peer: PeerConfig, name: str) -> TunnelConfig:
    addresses = tuple(a for a in (peer.tunnel.local_ipv4, peer.tunnel.local_ipv6) if a is not None)
    return TunnelConfig(name=name, local=peer.underlay.local, remote=peer.underlay.remote, key=peer.key,
                        addresses=addresses)


def tunnel_configs(config: NodeConfig) -> list[TunnelConfig]:
    names = tunnel_names(config.peers)
    return [tunnel_config(peer, names[peer.name]) for peer in config.peers]


def open_tunnels(
    configs: Sequence[TunnelConfig], mode: str, hook: InnerHook | None = None,
    *, fast_hook: FastHook | None = None, events: EventSink | None = None,
) -> Tunnels:
    """Make and open the tunnels, and start a userspace engine's data-plane thread.

    The one place the data path is wired: a userspace engine is built with ``hook`` (the ALT
    forwarder's decision on each decapsulated packet), ``fast_hook`` (its common case) and
    ``events`` (the node's dispatcher, which gets the hook's ``Local`` and ICMP-carrying
    ``Drop`` verdicts on the event loop); none is replaced later.  ``hook=None`` (FRR-integrated
    mode, ``NodeMapping(kernel_alt=True)``): no hook at all, every decapsulated packet is
    written to its TUN and the kernel routes it; the engine still does the GRE encapsulation
    and decapsulation in userspace where the kernel has no GRE (``mode`` "auto" picks kernel
    GRE where it has).

    The data-plane thread is its own, not the event loop's: BGP crosses these tunnels, and its
    keepalives must not wait for a loop busy with a Map-Register flood or slow API clients.
    Local deliveries come back to the running loop through the engine's bounded hand-off.
    Without a running loop (a reload driven by a test) the engine is left for the caller to poll.
    """
    tunnels = make_tunnels(configs, mode, hook, fast_hook=fast_hook, events=events)
    # Netlink work runs in a helper thread inside open(); fine to call from the loop.
    tunnels.open()
    if isinstance(tunnels, Engine):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return tunnels
        sys.setswitchinterval(SWITCH_INTERVAL)
        tunnels.start(loop)
    return tunnels


class PeerTunnels:
    """A node's GRE tunnels, one per peer, and their names: the one record of both.

    ``names`` (peer name -> tunnel name) is what the engine, the forwarder and the API use.
    ``hook``, ``fast_hook`` and ``events`` are what ``open_tunnels`` builds an engine with.
    With ``enabled`` false (a node run without tunnels, in tests) only the names are kept.
    """

    def __init__(
        self, peers: Sequence[PeerConfig], mode: str, hook: InnerHook | None, fast_hook: FastHook | None,
        *, events: EventSink | None = None, enabled: bool = True,
    ) -> None:
        self.names = tunnel_names(peers)
        self.mode = mode
        self.hook = hook
        self.fast_hook = fast_hook
        self.events = events
        self.enabled = enabled
        self.running: Tunnels | None = None

    @property
    def engine(self) -> Engine | None:
        """The userspace GRE engine, if the tunnels are userspace."""
        return self.running if isinstance(self.running, Engine) else None

    def open(self, peers: Sequence[PeerConfig]) -> None:
        if self.enabled and peers:
            configs = [tunnel_config(p, self.names[p.name]) for p in peers]
            self.running = open_tunnels(configs, self.mode, self.hook, fast_hook=self.fast_hook,
                                        events=self.events)

    def add(self, added: Sequence[PeerConfig], index: Mapping[str, int]) -> None:
        """Make and name the tunnels of peers a reload adds (``index``: their place in the new
        config), all or none: a failure removes the ones made and raises."""
        names = names_for_added(self.names.values(), added, index)
        if self.enabled and self.running is not None and self.engine is None:
            raise RuntimeError("the running tunnels are kernel GRE")
        made: list[str] = []
        try:
            for peer in added:
                if not self.enabled:
                    continue
                config = tunnel_config(peer, names[peer.name])
                if self.engine is not None:
                    self.engine.add_tunnel(config)
                else:
                    # The node had no peer, so no engine yet: start one as open() does.
                    self.running = open_tunnels([config], self.mode, self.hook, fast_hook=self.fast_hook,
                                                events=self.events)
                made.append(names[peer.name])
        except BaseException:
            for name in made:
                self.remove_named(name)
            raise
        self.names.update(names)

    def remove_named(self, name: str) -> None:
        if self.engine is not None:
            self.engine.remove_tunnel(name)

    def close(self) -> None:
        if self.running is not None:
            self.running.close()
            self.running = None
