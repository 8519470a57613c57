"""FRR mode's kernel forwarding loosens a strict rp_filter (RFC 3704 §2.2 strict, §2.4 loose).

An ALT datagram keeps the ITR's source address (RFC 6836 §3.3), reached over the underlay, not
the tunnel it arrives on: strict reverse-path filtering drops it.  A fake /proc/sys tree stands
for the namespace's sysctls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alt_router.node import kernel_alt as ka


def proc_sys(tmp_path: Path, **rp_filter: str) -> Path:
    for name in ka.FORWARDING_SYSCTLS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    for device, value in rp_filter.items():
        path = tmp_path / "net/ipv4/conf" / device.replace("_", "-") / "rp_filter"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return tmp_path


def rp(root: Path, device: str) -> str:
    return (root / "net/ipv4/conf" / device / "rp_filter").read_text().strip()


def test_strict_becomes_loose_on_all_default_and_the_tunnels(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # alt-b, alt3: node/tunnels.py's names; eth0 (the underlay) and a VRF named alt are not tunnels.
    root = proc_sys(tmp_path, all="1", default="1", eth0="1", alt_b="1", alt3="1", alt="1", lo="0")
    assert ka.enable_forwarding(root) == [
        "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
        "net.ipv4.conf.alt-b.rp_filter", "net.ipv4.conf.alt3.rp_filter"]
    assert [rp(root, d) for d in ("all", "default", "alt-b", "alt3")] == ["2"] * 4
    assert [rp(root, d) for d in ("eth0", "alt", "lo")] == ["1", "1", "0"]
    assert "strict reverse-path filtering drops ALT datagrams" in caplog.text
    assert ka.enable_forwarding(root) == []  # once


def test_off_and_loose_are_the_operators_and_stay(tmp_path: Path) -> None:
    root = proc_sys(tmp_path, all="0", default="2", alt_b="0", alt_c="1")
    # The kernel applies the larger of all and the device's value: alt-c alone is strict.
    assert ka.enable_forwarding(root) == ["net.ipv4.conf.alt-c.rp_filter"]
    assert [rp(root, d) for d in ("all", "default", "alt-b", "alt-c")] == ["0", "2", "0", "2"]


def test_named_tunnels_only_when_given(tmp_path: Path) -> None:
    root = proc_sys(tmp_path, all="2", default="2", alt_b="1", gre9="1")
    assert ka.enable_forwarding(root, tunnels=["gre9"]) == ["net.ipv4.conf.gre9.rp_filter"]
    assert rp(root, "alt-b") == "1"


def test_no_rp_filter_to_read_is_not_an_error(tmp_path: Path) -> None:
    root = proc_sys(tmp_path)
    assert ka.enable_forwarding(root) == []
    assert ka.enable_forwarding(root, tunnels=["alt-gone"]) == []
