from __future__ import annotations

import os
import subprocess
import uuid
from ipaddress import ip_address, ip_interface

import pytest
from pyroute2 import NetNS, netns

from alt_router.gre.config import TunnelConfig
from alt_router.gre.kernel import GRE_CSUM, GRE_KEY, GRE_SEQ, link_request, probe_kernel_gre


def test_ipv4_request() -> None:
    cfg = TunnelConfig("gre1", ip_address("192.0.2.1"), ip_address("192.0.2.2"), key=42, ttl=17)
    assert link_request(cfg) == {
        "ifname": "gre1", "kind": "gre", "mtu": 1500 - 28,
        "gre_local": "192.0.2.1", "gre_remote": "192.0.2.2", "gre_ttl": 17,
        "gre_iflags": GRE_KEY, "gre_oflags": GRE_KEY, "gre_ikey": 42, "gre_okey": 42,
    }


def test_ipv4_request_without_key_has_no_key_attributes() -> None:
    cfg = TunnelConfig("gre1", ip_address("192.0.2.1"), ip_address("192.0.2.2"), checksum=True, sequence=True)
    req = link_request(cfg)
    assert req["gre_iflags"] == req["gre_oflags"] == GRE_CSUM | GRE_SEQ == 0x9000
    assert "gre_ikey" not in req and "gre_okey" not in req
    assert req["mtu"] == 1500 - 20 - 12


@pytest.mark.parametrize(("byteorder", "flags"), [("little", 0x0020), ("big", 0x2000)])
def test_ip6gre_flags_are_passed_in_network_order(byteorder: str, flags: int) -> None:
    cfg = TunnelConfig("gre6", ip_address("2001:db8::1"), ip_address("2001:db8::2"), key=1)
    req = link_request(cfg, byteorder=byteorder)
    assert req["kind"] == "ip6gre"
    assert (req["ip6gre_local"], req["ip6gre_remote"]) == ("2001:db8::1", "2001:db8::2")
    assert req["ip6gre_iflags"] == req["ip6gre_oflags"] == flags
    assert req["ip6gre_ikey"] == 1
    assert req["mtu"] == 1500 - 48


@pytest.mark.netns
def test_kernel_gre_link_where_the_kernel_has_gre(root: None) -> None:
    ok, why = probe_kernel_gre(4)
    if not ok:
        # An expected skip on kernels without GRE (these CI machines): the userspace path covers them.
        pytest.skip(f"kernel has no GRE: {why}")
    name = f"altgrek{uuid.uuid4().hex[:6]}"
    cfg = TunnelConfig(
        "gre9", ip_address("192.0.2.1"), ip_address("192.0.2.2"), key=77,
        addresses=(ip_interface("10.255.9.1/30"),),
    )
    ns = NetNS(name, flags=os.O_CREAT | os.O_EXCL)
    try:
        ns.link("add", **link_request(cfg))
        (link,) = ns.get_links(ifname="gre9")
        data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        assert data.get_attr("IFLA_GRE_REMOTE") == "192.0.2.2"
        assert data.get_attr("IFLA_GRE_OKEY") == 77
        assert link.get_attr("IFLA_MTU") == cfg.mtu
        shown = subprocess.run(
            ["ip", "-n", name, "-d", "link", "show", "gre9"], capture_output=True, text=True, check=True
        )
        assert "key 0.0.0.77" in shown.stdout or "key 77" in shown.stdout
    finally:
        ns.close()
        netns.remove(name)
