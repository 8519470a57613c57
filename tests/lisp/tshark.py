"""Run Wireshark's LISP dissector (tshark) over our encoded messages.

The interop tests batch many messages into one capture because each tshark
start costs about a second; ``dissect`` returns one ``Dissection`` per message,
in order.  tshark's JSON repeats keys (two ITR-RLOCs are two
``lisp.mreq.itr_rloc`` members of one object), which ``json.loads`` would
silently collapse to the last one, so duplicates are merged into lists here and
``many`` reads a key as a list whether it occurred once or several times.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from alt_router import inet, pcap

LISP_CONTROL_PORT = 4342

IPV4_SRC = ip_address("192.0.2.1")
IPV4_DST = ip_address("192.0.2.2")
IPV6_SRC = ip_address("2001:db8::1")
IPV6_DST = ip_address("2001:db8::2")


@dataclass(frozen=True, slots=True)
class Dissection:
    """What tshark made of one frame: ``layers`` maps protocol name to its fields (a list when repeated)."""

    layers: dict[str, Any]

    @property
    def lisp(self) -> dict[str, Any]:
        """The outermost LISP layer."""
        return many(self.layers, "lisp")[0]  # type: ignore[no-any-return]

    @property
    def lisp_layers(self) -> list[dict[str, Any]]:
        """Every LISP layer, outermost first (an ECM has two)."""
        return many(self.layers, "lisp")

    @property
    def malformed(self) -> bool:
        return "_ws.malformed" in self.layers or _contains_key(self.layers, "_ws.malformed")

    @property
    def expert_messages(self) -> list[str]:
        """tshark's expert-info complaints about the frame (empty if it had none)."""
        found: list[str] = []
        _collect(self.layers, "_ws.expert.message", found)
        return found


def _merge_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            if isinstance(out[key], _Repeated):
                out[key].append(value)
            else:
                out[key] = _Repeated([out[key], value])
        else:
            out[key] = value
    return out


class _Repeated(list[Any]):
    """A key tshark emitted more than once (as opposed to a JSON array it emitted itself)."""


def many(obj: dict[str, Any], key: str) -> list[Any]:
    """``obj[key]`` as a list: ``[]`` when absent, ``[value]`` when it occurred once."""
    if key not in obj:
        return []
    value = obj[key]
    return list(value) if isinstance(value, _Repeated) else [value]


def one(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]``, which must occur exactly once."""
    values = many(obj, key)
    assert len(values) == 1, f"{key}: expected exactly one, tshark gave {len(values)} in {sorted(obj)}"
    return values[0]


def _contains_key(obj: Any, key: str) -> bool:
    if isinstance(obj, dict):
        return any(k == key or _contains_key(v, key) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_contains_key(v, key) for v in obj)
    return False


def _collect(obj: Any, key: str, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.extend(str(x) for x in (v if isinstance(v, list) else [v]))
            else:
                _collect(v, key, out)
    elif isinstance(obj, list):
        for v in obj:
            _collect(v, key, out)


def udp_to_control_port(payload: bytes, *, family: int = 4, sport: int = 49152) -> bytes:
    """An IP/UDP packet carrying ``payload`` to the LISP control port (RFC 9301 §5.1)."""
    src, dst = (IPV4_SRC, IPV4_DST) if family == 4 else (IPV6_SRC, IPV6_DST)
    assert isinstance(src, IPv4Address | IPv6Address)
    return inet.udp_packet(src, dst, sport, LISP_CONTROL_PORT, payload)


def dissect(
    tshark: str, payloads: Sequence[bytes], *, families: Sequence[int] | None = None,
) -> list[Dissection]:
    """Wrap each LISP payload in IP/UDP to port 4342, write one raw-IP pcap, run tshark once."""
    fams = list(families) if families is not None else [4] * len(payloads)
    packets = [udp_to_control_port(p, family=f) for p, f in zip(payloads, fams, strict=True)]
    return dissect_packets(tshark, packets)


def dissect_packets(tshark: str, ip_packets: Sequence[bytes]) -> list[Dissection]:
    """Run tshark once over raw IP packets; one ``Dissection`` per packet."""
    with tempfile.TemporaryDirectory(prefix="alt-router-tshark-") as tmp:
        path = Path(tmp) / "messages.pcap"
        path.write_bytes(pcap.write_pcap([(float(i), p) for i, p in enumerate(ip_packets)]))
        proc = subprocess.run(
            [tshark, "-n", "-r", str(path), "-T", "json"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(f"tshark failed ({proc.returncode}): {proc.stderr.strip()}")
    frames = json.loads(proc.stdout, object_pairs_hook=_merge_duplicates)
    assert len(frames) == len(ip_packets), f"tshark read {len(frames)} of {len(ip_packets)} frames"
    return [Dissection(frame["_source"]["layers"]) for frame in frames]
