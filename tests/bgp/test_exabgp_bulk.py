"""Bulk UPDATEs from ExaBGP: NLRI become canonical prefix text in batches sharing one attributes object."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network

from alt_router.bgp.exabgp_api import ApiReader, RouteUpdate, parse_line
from alt_router.rib import PeerInfo, Rib


def update_line(announce: dict[str, dict[str, list[object]]], withdraw: dict[str, list[object]] | None = None,
                as_path: list[int] | None = None) -> str:
    upd: dict[str, object] = {
        "attribute": {"origin": "igp",
                      "as-path": {"0": {"element": "as-sequence", "value": as_path or [65002]}}},
        "announce": announce,
    }
    if withdraw:
        upd["withdraw"] = withdraw
    return json.dumps({"exabgp": "5.0.0", "type": "update", "neighbor": {
        "address": {"local": "10.255.0.1", "peer": "10.255.0.2"}, "asn": {"local": 65001, "peer": 65002},
        "direction": "receive", "message": {"update": upd}}})


def test_nlri_of_one_next_hop_share_a_batch_and_attributes_are_shared_across_lines() -> None:
    nets = [{"nlri": f"153.{16 + (i >> 8)}.{i & 255}.0/24"} for i in range(500)]
    ev = parse_line(update_line({"ipv4 unicast": {"10.255.0.2": nets},
                                 "ipv6 unicast": {"fe80::1": [{"nlri": "2001:db8:1::/48"}]}}))
    assert isinstance(ev, RouteUpdate) and ev.skipped == 0
    v4, v6 = ev.batches
    assert v4.next_hop == ip_address("10.255.0.2") and len(v4.prefixes) == 500
    assert v4.prefixes[7] == "153.16.7.0/24" and v6.prefixes == ("2001:db8:1::/48",)
    assert v4.attributes is v6.attributes and v4.attributes.as_path == (65002,)
    again = parse_line(update_line({"ipv4 unicast": {"10.255.0.2": [{"nlri": "153.17.0.0/16"}]}}))
    assert isinstance(again, RouteUpdate)
    # A peer sends few distinct attribute sets: equal ones are one object, as are next hops.
    assert again.batches[0].attributes is v4.attributes and again.batches[0].next_hop is v4.next_hop
    # The object views still work, for small consumers.
    assert ev.announce[0].prefix == ip_network("153.16.0.0/24") and len(ev.announce) == 501


def test_bad_or_misfiled_nlri_are_skipped_one_by_one() -> None:
    line = update_line(
        {"ipv4 unicast": {"10.255.0.2": [{"nlri": "153.16.0.1/24"}, {"nlri": "2001:db8::/32"}, {"nlri": 7},
                                         "153.18.0.0/16", {"nlri": "153.17.0.0/16"}, {}]}},
        withdraw={"ipv4 unicast": [{"nlri": "153.19.0.0/16"}, {"nlri": "x"}],
                  "ipv6 unicast": [{"nlri": "2001:db8:0:0::/48"}, {"nlri": "153.20.0.0/16"}]},
    )
    reader = ApiReader()
    ev = reader.feed(line)
    assert isinstance(ev, RouteUpdate)
    assert ev.batches[0].prefixes == ("153.18.0.0/16", "153.17.0.0/16")
    # IPv6 text is canonicalised, so one prefix has one key whatever the spelling.
    assert ev.withdraw_keys == ("153.19.0.0/16", "2001:db8::/48")
    assert ev.skipped == 6 and reader.counters["nlri-skipped"] == 6
    assert ev.withdraw == (ip_network("153.19.0.0/16"), ip_network("2001:db8::/48"))


def test_a_bulk_update_lands_in_the_rib_with_link_local_next_hops_mapped() -> None:
    rib = Rib(65001, [ip_network("153.16.0.0/12"), ip_network("2001:db8::/32")],
              [PeerInfo("f", 65002, (ip_address("10.255.0.2"), ip_address("fd00::2")), max_prefix=10_000)])
    rib.peer_up("f", 1.0)
    nets = [{"nlri": f"153.16.{i >> 8}.{i & 255}/32"} for i in range(2000)]
    ev = parse_line(update_line({"ipv4 unicast": {"10.255.0.2": nets},
                                 "ipv6 unicast": {"fe80::2": [{"nlri": "2001:db8:1::/48"}]}}))
    assert isinstance(ev, RouteUpdate)
    rib.apply(ev.to_rib("f"), 2.0)
    assert len(rib) == 2001
    path = rib.lookup("2001:db8:1::1")
    assert path is not None and path.next_hop_peer == "f" and str(path.next_hop) == "fe80::2"
    withdraw = parse_line(update_line({}, withdraw={"ipv4 unicast": nets[:1000]}))
    assert isinstance(withdraw, RouteUpdate)
    rib.apply(withdraw.to_rib("f"), 3.0)
    assert len(rib) == 1001 and rib.lookup("153.16.0.5") is None and rib.lookup("153.16.5.208") is not None
