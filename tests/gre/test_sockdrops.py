"""Kernel drops of the engine's TUN devices are read from /sys, for our own namespace only."""

from __future__ import annotations

import socket
from pathlib import Path

from alt_router.sockdrops import link_tx_dropped


def fake_sys(tmp_path: Path, name: str, ifindex: int, dropped: int) -> Path:
    stats = tmp_path / name / "statistics"
    stats.mkdir(parents=True)
    (tmp_path / name / "ifindex").write_text(f"{ifindex}\n")
    (stats / "tx_dropped").write_text(f"{dropped}\n")
    return tmp_path


def test_tx_dropped_of_a_link_in_our_namespace(tmp_path: Path) -> None:
    sys_net = fake_sys(tmp_path, "lo", socket.if_nametoindex("lo"), 42)
    assert link_tx_dropped("lo", sys_net) == 42


def test_a_sysfs_of_another_namespace_is_not_believed(tmp_path: Path) -> None:
    sys_net = fake_sys(tmp_path, "lo", socket.if_nametoindex("lo") + 1000, 42)
    assert link_tx_dropped("lo", sys_net) is None
    assert link_tx_dropped("no-such-link", sys_net) is None
