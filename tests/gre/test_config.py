from __future__ import annotations

import argparse
import json
import re
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest

from alt_router.commands.tunnel import configs_from_args, write_stats
from alt_router.gre.config import TunnelConfig, TunnelConfigError, check_set, load_toml
from alt_router.gre.tunnel import ModeError, choose_mode

GOOD = """
mode = "userspace"
[[tunnel]]
name = "gre1"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 42
checksum = true
addresses = ["10.255.0.1/30", "fd00:255::1/64"]

[[tunnel]]
name = "gre2"
local = "2001:db8::1"
remote = "2001:db8::2"
sequence = true
ttl = 10
underlay_mtu = 9000
"""


def test_load_toml() -> None:
    mode, tunnels = load_toml(GOOD)
    assert mode == "userspace"
    assert tunnels[0] == TunnelConfig(
        "gre1", ip_address("192.0.2.1"), ip_address("192.0.2.2"), key=42, checksum=True,
        addresses=(ip_interface("10.255.0.1/30"), ip_interface("fd00:255::1/64")),
    )
    assert tunnels[0].mtu == 1500 - 20 - 4 - 4 - 4
    assert (tunnels[1].family, tunnels[1].ttl, tunnels[1].mtu) == (6, 10, 9000 - 40 - 4 - 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[tunnel]\n", "tunnels file"),
        ("mode = 'fast'\n[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'", "mode 'fast'"),
        ("", "no [[tunnel]]"),
        ("colour = 1", "unknown top-level"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'", "missing 'remote'"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='2001:db8::1'", "differ in family"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.1'", "both"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.x'\nremote='192.0.2.2'", "local"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nkey='x'", "key must be an integer"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nkey=4294967296", "32 bits"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nttl=0", "ttl"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nchecksum=1", "true or false"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nunderlay_mtu=1300", "below 1280"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\naddresses=['10.0.0.1']", "prefix"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\nkye=1", "unknown setting"),
        ("[[tunnel]]\nname='averyveryverylongname'\nlocal='192.0.2.1'\nremote='192.0.2.2'", "interface name"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\n"
         "[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.3'", "used twice"),
        ("[[tunnel]]\nname='a'\nlocal='192.0.2.1'\nremote='192.0.2.2'\n"
         "[[tunnel]]\nname='b'\nlocal='192.0.2.1'\nremote='192.0.2.2'", "same local"),
    ],
)
def test_bad_toml_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TunnelConfigError, match=re.escape(message)):
        load_toml(text)


def test_same_endpoints_with_different_keys_are_allowed() -> None:
    a, b = ip_address("192.0.2.1"), ip_address("192.0.2.2")
    assert len(check_set([TunnelConfig("x", a, b, key=1), TunnelConfig("y", a, b)])) == 2


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "config": None, "name": None, "local": None, "remote": None, "key": None, "csum": False,
        "seq": False, "address": [], "ttl": 64, "underlay_mtu": 1500, "mode": None,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_single_tunnel_from_options() -> None:
    mode, (t,) = configs_from_args(
        args(name="gre1", local="192.0.2.1", remote="192.0.2.2", key=5, csum=True, address=["10.0.0.1/30"])
    )
    assert mode == "auto"
    assert (t.name, t.key, t.checksum, t.addresses) == ("gre1", 5, True, (ip_interface("10.0.0.1/30"),))


def test_options_errors() -> None:
    with pytest.raises(TunnelConfigError, match="need -c"):
        configs_from_args(args(name="gre1"))
    with pytest.raises(TunnelConfigError, match="not both"):
        configs_from_args(args(config=Path("/x"), name="gre1"))
    with pytest.raises(TunnelConfigError, match="cannot read"):
        configs_from_args(args(config=Path("/nonexistent/tunnels.toml")))
    with pytest.raises(TunnelConfigError):
        configs_from_args(args(name="gre1", local="192.0.2.1", remote="nonsense"))


def test_mode_option_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    assert configs_from_args(args(config=path))[0] == "userspace"
    assert configs_from_args(args(config=path, mode="kernel"))[0] == "kernel"


def test_write_stats_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_stats(path, {"a": 1})
    write_stats(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


@pytest.mark.parametrize(
    ("requested", "kernel_ok", "hook", "expected", "bpf_ok"),
    [
        ("auto", True, False, "kernel", True),
        ("auto", False, False, "userspace", False),
        # No kernel GRE: tc-BPF GRE is next best, unless an inner-packet hook needs every packet.
        ("auto", False, False, "bpf", True),
        ("auto", False, True, "userspace", True),
        ("auto", True, True, "userspace", True),
        ("userspace", True, False, "userspace", True),
        ("kernel", True, False, "kernel", True),
        ("bpf", True, False, "bpf", True),
    ],
)
def test_choose_mode(requested: str, kernel_ok: bool, hook: bool, expected: str, bpf_ok: bool) -> None:
    chosen, why = choose_mode(
        requested, kernel_ok=kernel_ok, kernel_why="probe said so", needs_userspace=hook,
        bpf_ok=bpf_ok, bpf_why="bpf probe said so",
    )
    assert chosen == expected
    assert why


def test_auto_fallback_explains_why() -> None:
    _, why = choose_mode("auto", kernel_ok=False, kernel_why="no gre module", needs_userspace=False,
                         bpf_why="no CAP_BPF")
    assert "falling back" in why and "no gre module" in why and "no CAP_BPF" in why


@pytest.mark.parametrize(
    ("requested", "kernel_ok", "hook"),
    [("kernel", False, False), ("kernel", True, True), ("fast", True, False), ("bpf", True, False),
     ("bpf", True, True)],
)
def test_impossible_modes_are_refused(requested: str, kernel_ok: bool, hook: bool) -> None:
    # bpf_ok is left False: "bpf" asked for where programs do not load is refused, not downgraded.
    with pytest.raises(ModeError):
        choose_mode(requested, kernel_ok=kernel_ok, kernel_why="no gre", needs_userspace=hook)
