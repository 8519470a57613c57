"""FRR-mode stop (issue 10): the node closes its tunnels, and with them the kernel's ALT routes, once
bgpd's Cease has ended the BGP sessions over them; ``bgp_sessions`` is how it sees that."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

from alt_router.node.frr_mode import bgp_sessions

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout\n"


def row(local: str, remote: str, state: str) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000   92  0 1 1 0 20 4\n"


def test_counts_established_port_179_connections_with_a_peer(tmp_path: Path) -> None:
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    # 10.255.1.2:40000 -> 10.255.1.1:179 established; the same peer in TIME_WAIT (06); a listener
    # (0A); a session with an address that is no peer's; port 80 to the peer.
    tcp.write_text(HEADER + row("0201FF0A:9C40", "0101FF0A:00B3", "01")
                   + row("0201FF0A:9C41", "0101FF0A:00B3", "06")
                   + row("00000000:00B3", "00000000:0000", "0A")
                   + row("0201FF0A:00B3", "0901FF0A:D431", "01")
                   + row("0201FF0A:9C42", "0101FF0A:0050", "01"))
    # An IPv4 peer accepted on an IPv6 socket (::ffff:10.255.1.1), and an IPv6 peer fd00::1.
    mapped = "0000000000000000FFFF0000"
    tcp6.write_text(HEADER + row(f"{mapped}0201FF0A:00B3", f"{mapped}0101FF0A:C350", "01")
                    + row("000000FD000000000000000002000000:00B3",
                          "000000FD000000000000000001000000:C351", "01"))
    peers = {ip_address("10.255.1.1"), ip_address("fd00::1")}
    assert bgp_sessions(peers, [str(tcp), str(tcp6)]) == 3
    assert bgp_sessions({ip_address("10.255.1.1")}, [str(tcp)]) == 1
    assert bgp_sessions(peers, [str(tmp_path / "missing")]) == 0
