"""``alt-router decode`` and ``alt-router demo`` end to end, on captures the tests write."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path

import pytest

from alt_router import inet, lisp, pcap
from alt_router.cli import main
from alt_router.commands import demo

A = ip_address
ITR, MR = A("192.0.2.1"), A("192.0.2.100")
ITR6, ETR6 = A("2001:db8::1"), A("2001:db8::2")

REQUEST = lisp.MapRequest(
    0x1122334455667788, A("10.2.0.9"), (ITR, A("2001:db8::1")),
    (lisp.EidRecord(lisp.InstanceId(7, A("10.1.0.0")), 16),), smr=True,
)
REPLY = lisp.MapReply(
    0x1122334455667788,
    (lisp.MappingRecord(A("10.1.0.0"), 16, 1440, (lisp.Locator(A("198.51.100.1"), 1, 50, local=True),),
                        authoritative=True),),
)
NEGATIVE = lisp.MapReply(5, (lisp.MappingRecord(A("10.128.0.0"), 9, 15, (), lisp.Action.NATIVELY_FORWARD),))
REGISTER = lisp.sign(lisp.MapRegister(9, REPLY.records, want_map_notify=True), "k", algorithm_id=2)
ECM = lisp.ECM(REQUEST, A("10.2.0.9"), A("10.1.0.7"), 50000)


def udp(src: inet.IPAddress, dst: inet.IPAddress, sport: int, dport: int, payload: bytes) -> bytes:
    return inet.udp_packet(src, dst, sport, dport, payload)


def exchange() -> list[tuple[Decimal, bytes]]:
    """A Map-Request, its Map-Reply, a DNS packet (ignored) and an IPv6 ECM."""
    return [
        (Decimal("100.000001"), udp(ITR, MR, 50000, 4342, REQUEST.encode())),
        (Decimal("100.5"), udp(MR, ITR, 4342, 50000, REPLY.encode())),
        (Decimal("101"), udp(ITR, MR, 5353, 53, b"\x00" * 12)),
        (Decimal("102"), udp(ITR6, ETR6, 50001, 4342, ECM.encode())),
    ]


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    status = main(["decode", "--json", *argv])
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng", "ethernet", "ethernet-pcapng"])
def test_json_from_each_capture_format(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    packets = exchange()
    if fmt.startswith("ethernet"):
        packets = [(ts, pcap.ethernet_frame(ip, vlan=10)) for ts, ip in packets]
    linktype = pcap.LINKTYPE_ETHERNET if fmt.startswith("ethernet") else pcap.LINKTYPE_RAW
    data = (
        pcap.write_pcapng(packets, linktype=linktype) if fmt.endswith("pcapng")
        else pcap.write_pcap(packets, linktype=linktype, nanosecond=fmt == "pcap-ns")
    )
    status, objs = run_json(capsys, write(tmp_path, "cap", data))
    assert status == 0
    assert [o["frame"] for o in objs] == [1, 2, 4]  # frame 3 (DNS) is not LISP
    first, second, third = objs
    assert first["src"] == "192.0.2.1" and first["sport"] == 50000 and first["dport"] == 4342
    assert first["time"] == pytest.approx(100.000001)
    assert first["message"] == {
        "type": "Map-Request",
        "nonce": "0x1122334455667788",
        "source_eid": "10.2.0.9",
        "itr_rlocs": ["192.0.2.1", "2001:db8::1"],
        "records": [{
            "prefix": "[iid 7] 10.1.0.0/16",
            "eid": {"lcaf": "instance-id", "instance_id": 7, "address": "10.1.0.0", "iid_mask_len": 0},
            "mask_len": 16,
        }],
        "authoritative": False, "probe": False, "smr": True, "pitr": False, "smr_invoked": False,
        "local_xtr": False, "dont_map_reply": False, "map_reply": None,
    }
    reply = second["message"]
    assert isinstance(reply, dict)
    assert reply["type"] == "Map-Reply"
    (record,) = reply["records"]
    assert record["prefix"] == "10.1.0.0/16" and record["ttl"] == 1440 and record["action"] == "no-action"
    assert record["locators"] == [{
        "address": "198.51.100.1", "priority": 1, "weight": 50, "m_priority": 255, "m_weight": 0,
        "local": True, "probed": False, "reachable": True,
    }]
    ecm = third["message"]
    assert isinstance(ecm, dict)
    assert third["src"] == "2001:db8::1"
    assert ecm["type"] == "Encapsulated-Control-Message"
    assert ecm["source"] == "10.2.0.9" and ecm["destination_port"] == 4342
    assert ecm["inner"] == first["message"]


def test_text_output_shows_each_message_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x.pcap", pcap.write_pcap(
        [*exchange(), (Decimal(103), udp(MR, ITR, 4342, 50000, NEGATIVE.encode())),
         (Decimal(104), udp(ITR, MR, 50000, 4342, REGISTER.encode()))]
    ))
    assert main(["decode", path]) == 0
    out = capsys.readouterr().out
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 6  # five messages and the summary
    assert blocks[0].splitlines()[0] == (
        "#1  frame 1  1970-01-01 00:01:40.000001  192.0.2.1:50000 \u2192 192.0.2.100:4342  Map-Request"
    )
    assert "    flags: smr" in blocks[0]
    assert "    nonce: 0x1122334455667788" in blocks[0]
    assert "    itr_rlocs: 192.0.2.1, 2001:db8::1" in blocks[0]
    assert "      - [iid 7] 10.1.0.0/16" in blocks[0]
    assert "      - 10.1.0.0/16 ttl=1440 action=no-action map_version=0 [authoritative]" in blocks[1]
    locator = "          - 198.51.100.1 priority=1 weight=50 m_priority=255 m_weight=0 [local reachable]"
    assert locator in blocks[1]
    assert "[2001:db8::1]:50001 \u2192 [2001:db8::2]:4342  Encapsulated-Control-Message" in blocks[2]
    assert "    inner: Map-Request" in blocks[2]
    assert "      - 10.128.0.0/9 ttl=15 negative action=natively-forward map_version=0" in blocks[3]
    assert "    algorithm_id: 2" in blocks[4]
    assert f"    auth_data: {REGISTER.auth_data.hex()}" in blocks[4]
    assert blocks[5] == "5 LISP message(s), 0 malformed; 6 frame(s) read, 1 not LISP control on port(s) 4342"


def test_malformed_message_is_reported_counted_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    broken = REPLY.encode()[:-3]
    path = write(tmp_path, "bad.pcap", pcap.write_pcap(
        [(0, udp(MR, ITR, 4342, 50000, broken)), (1, udp(ITR, MR, 50000, 4342, REQUEST.encode()))]
    ))
    assert main(["decode", path]) == 1
    out = capsys.readouterr().out
    with pytest.raises(lisp.LispDecodeError) as exc:
        lisp.decode(broken)
    assert f"    malformed: {exc.value}" in out
    assert "Map-Request" in out
    assert "2 LISP message(s), 1 malformed" in out
    status, objs = run_json(capsys, path)
    assert status == 1
    assert objs[0]["malformed"] == str(exc.value) and "message" not in objs[0]
    assert objs[1]["message"]["type"] == "Map-Request"  # type: ignore[index]


def test_port_option_selects_the_control_ports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "p.pcap", pcap.write_pcap(
        [(0, udp(ITR, MR, 50000, 14342, REQUEST.encode())), (1, udp(ITR, MR, 50000, 4342, REPLY.encode()))]
    ))
    _, default = run_json(capsys, path)
    assert [o["frame"] for o in default] == [2]
    _, chosen = run_json(capsys, "--port", "14342", path)
    assert [o["frame"] for o in chosen] == [1]
    _, both = run_json(capsys, "--port", "14342", "--port", "4342", path)
    assert [o["frame"] for o in both] == [1, 2]


def test_non_ip_and_damaged_ip_frames_are_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    short_ip = pcap.ethernet_frame(udp(ITR, MR, 50000, 4342, REQUEST.encode()))[:30]
    good = pcap.ethernet_frame(udp(ITR, MR, 50000, 4342, REQUEST.encode()))
    path = write(tmp_path, "e.pcap", pcap.write_pcap([(0, arp), (1, short_ip), (2, good)], linktype=1))
    assert main(["decode", path]) == 0
    out = capsys.readouterr().out
    assert "frame 3" in out
    assert "1 LISP message(s), 0 malformed; 3 frame(s) read, 2 not LISP" in out
    assert "(1 with a damaged IP/UDP header)" in out


def test_truncated_capture_prints_what_it_has_then_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = pcap.write_pcap(exchange())
    path = write(tmp_path, "cut.pcap", data[:-10])
    assert main(["decode", path]) == 2
    captured = capsys.readouterr()
    assert "Map-Request" in captured.out and "Map-Reply" in captured.out
    assert "truncated" in captured.err and "packet 4 at offset" in captured.err


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "too short"), (b"GIF89a" + b"\x00" * 40, "unknown magic")],
)
def test_not_a_capture_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str,
) -> None:
    assert main(["decode", write(tmp_path, "f", content)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_no_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(tmp_path / "absent.pcap")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["decode"]) == 2
    assert "give a capture FILE" in capsys.readouterr().err
    assert main(["decode", "--port", "0", "--hex", "00"]) == 2


def test_hex_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(f"{b:02x}" for b in REPLY.encode())
    status, objs = run_json(capsys, "--hex", REQUEST.encode().hex(), "--hex", "0x" + spaced, "--hex", "8000")
    assert status == 1
    assert [o.get("message", {}).get("type") for o in objs] == ["Map-Request", "Map-Reply", None]  # type: ignore[attr-defined]
    assert "frame" not in objs[0]
    assert "ECM" in str(objs[2]["malformed"])
    assert main(["decode", "--hex", "abc"]) == 2
    assert "hex input 1" in capsys.readouterr().err


def test_hex_lines_on_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = f"# a capture from elsewhere\n{REQUEST.encode().hex()}\n\n{ECM.encode().hex()}  # the ECM\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["decode", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#1  Map-Request\n")
    assert "#2  Encapsulated-Control-Message" in out


def test_installed_command_runs_as_a_subprocess(tmp_path: Path) -> None:
    exe = shutil.which("alt-router")
    cmd = [exe] if exe else [sys.executable, "-m", "alt_router.cli"]
    path = write(tmp_path, "s.pcapng", pcap.write_pcapng(exchange()))
    proc = subprocess.run(
        [*cmd, "decode", "--json", path], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["message"]["type"] for line in proc.stdout.splitlines()] == [
        "Map-Request", "Map-Reply", "Encapsulated-Control-Message",
    ]


# -- demo and the bundled sample ---------------------------------------------------------------------------


def test_bundled_sample_is_what_the_codec_generates() -> None:
    """After a deliberate codec change: alt-router demo --write-sample alt_router/data/sample.pcap"""
    assert demo.sample_path().read_bytes() == demo.sample_capture()


def test_demo_decodes_every_message_type_of_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(objs) == 10
    types = [o["message"]["type"] for o in objs]
    assert set(types) == {
        "Map-Request", "Map-Reply", "Map-Register", "Map-Notify", "Encapsulated-Control-Message",
    }
    register = next(o["message"] for o in objs if o["message"]["type"] == "Map-Register")
    # The full 32-byte HMAC-SHA-256 digest (64 hex digits), as deployed peers expect (RFC 9301 §5.6).
    assert register["algorithm_id"] == lisp.HMAC_SHA_256_128 and len(register["auth_data"]) == 64
    replies = [o["message"] for o in objs if o["message"]["type"] == "Map-Reply"]
    assert any(not r["records"][0]["locators"] for r in replies), "the sample has a negative Map-Reply"
    assert {o["src"] for o in objs} & {"2001:db8:ffff::1"}, "the sample has IPv6 transport"


def test_sample_register_and_notify_verify_with_the_sample_key() -> None:
    frames = list(pcap.read_file(demo.sample_path()))
    payloads = [inet.parse_udp(inet.parse_ip(f.ip)).payload for f in frames if f.ip is not None]
    signed = [p for p in payloads if p[0] >> 4 in (3, 4)]
    assert len(signed) == 2
    assert all(lisp.verify(p, demo.SAMPLE_KEY) for p in signed)
    assert not any(lisp.verify(p, "wrong key") for p in signed)


def test_demo_write_sample(tmp_path: Path) -> None:
    target = tmp_path / "regen.pcap"
    assert main(["demo", "--write-sample", str(target)]) == 0
    assert target.read_bytes() == demo.sample_capture()
