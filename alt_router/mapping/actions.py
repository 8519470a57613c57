"""What the mapping cores ask the edge to do.

The cores (Map-Resolver, Map-Server, ETR, lig) never touch a socket: every
method returns a list of these and the daemon or command carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from alt_router.types import IPAddress, Prefix


@dataclass(frozen=True, slots=True)
class SendUdp:
    """Send ``payload`` from the role's own control socket.

    ``sport`` is the source port the core expects the reply on (the edge binds
    it: 4342 in production, anything on a loopback test); ``src`` None lets the
    kernel choose the source address.
    """

    dst: IPAddress
    dport: int
    payload: bytes
    sport: int = 4342
    src: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class SendAlt:
    """An IP packet (an ALT datagram) to put on the ALT where the resolver's one lookup said.

    ``route`` is that lookup's answer (``AltRoutes.route``): a tunnel name, ``"<local>"`` (this
    node's Map-Server or ETR), or the kernel's table in FRR-integrated mode.  The edge sends
    the datagram there without looking the EID up again.
    """

    packet: bytes
    route: str


@dataclass(frozen=True, slots=True)
class SendIp:
    """A whole IP packet (an ICMP error) for the kernel to route over the underlay (raw socket)."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class Announce:
    """Originate ``prefix`` into the ALT's BGP and treat it as local in the forwarder."""

    prefix: Prefix


@dataclass(frozen=True, slots=True)
class Withdraw:
    prefix: Prefix


Action = SendUdp | SendAlt | SendIp | Announce | Withdraw
