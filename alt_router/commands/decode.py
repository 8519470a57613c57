"""``alt-router decode``: print the LISP control messages in a capture or in hex strings.

Exit status: 0 when every LISP message decoded, 1 when any was malformed, 2
when the input could not be read (missing file, not a capture, a capture cut
short: the messages before the damage are still printed) or on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TextIO

from alt_router import inet, lisp, pcap
from alt_router.lisp import text as lisp_text
from alt_router.types import IPAddress

DEFAULT_PORTS = (lisp.LISP_CONTROL_PORT,)


@dataclass(frozen=True, slots=True)
class Found:
    """One UDP payload taken for a LISP control message, decoded or not.

    ``frame``/``ts_ns``/addresses are ``None`` for messages given as hex.
    """

    index: int
    message: lisp.LispMessage | None
    error: str | None
    frame: int | None = None
    ts_ns: int | None = None
    src: IPAddress | None = None
    sport: int | None = None
    dst: IPAddress | None = None
    dport: int | None = None
    udp_checksum_ok: bool = True


@dataclass(slots=True)
class Tally:
    """What the scan saw besides LISP messages (shown in the summary line)."""

    messages: int = 0
    malformed: int = 0
    frames: int = 0
    not_ip: int = 0
    bad_ip: int = 0
    other_traffic: int = 0
    ports: tuple[int, ...] = field(default=DEFAULT_PORTS)


def decode_payload(index: int, payload: bytes, **where: Any) -> Found:
    try:
        return Found(index, lisp.decode(payload), None, **where)
    except lisp.LispDecodeError as exc:
        return Found(index, None, str(exc), **where)


def scan_frames(frames: Iterable[pcap.Frame], tally: Tally) -> Iterator[Found]:
    """The LISP control messages (UDP to or from one of ``tally.ports``) in captured frames."""
    ports = set(tally.ports)
    for frame in frames:
        tally.frames += 1
        if frame.ip is None:
            tally.not_ip += 1
            continue
        try:
            # A capture shows what was on the wire; a bad IPv4 header checksum
            # there is the NIC's offload, not the sender's mistake.
            packet = inet.parse_ip(frame.ip, verify_checksum=False)
        except inet.InetError:
            tally.bad_ip += 1
            continue
        if packet.proto != inet.PROTO_UDP:
            tally.other_traffic += 1
            continue
        try:
            udp = inet.parse_udp(packet)
        except inet.InetError:
            tally.bad_ip += 1
            continue
        if udp.sport not in ports and udp.dport not in ports:
            tally.other_traffic += 1
            continue
        tally.messages += 1
        found = decode_payload(
            tally.messages, udp.payload, frame=frame.number, ts_ns=frame.ts_ns, src=packet.src,
            sport=udp.sport, dst=packet.dst, dport=udp.dport, udp_checksum_ok=udp.checksum_ok,
        )
        tally.malformed += found.error is not None
        yield found


def scan_hex(lines: Iterable[str], tally: Tally) -> Iterator[Found]:
    """LISP messages given as hex strings (spaces, colons and a ``0x`` prefix allowed; ``#`` comments)."""
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        payload = parse_hex(text, number)
        tally.messages += 1
        found = decode_payload(tally.messages, payload)
        tally.malformed += found.error is not None
        yield found


class HexError(ValueError):
    """A ``--hex`` argument or stdin line that is not hex."""


def parse_hex(text: str, number: int) -> bytes:
    cleaned = text.lower().removeprefix("0x").replace(":", "").replace(" ", "").replace("\t", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise HexError(f"hex input {number}: not an even number of hex digits: {text[:40]!r}") from None


# -- rendering ---------------------------------------------------------------------------------------------


def _endpoint(addr: IPAddress | None, port: int | None) -> str:
    if addr is None:
        return "?"
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def format_time(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%d %H:%M:%S}.{ns // 1000:06d}"


def to_text(found: Found) -> list[str]:
    """One block of lines for one message: a header line, then indented fields."""
    kind = lisp_text.message_type(found.message) if found.message is not None else "malformed"
    if found.frame is None:
        head = f"#{found.index}  {kind}"
    else:
        assert found.ts_ns is not None
        head = (
            f"#{found.index}  frame {found.frame}  {format_time(found.ts_ns)}  "
            f"{_endpoint(found.src, found.sport)} \u2192 {_endpoint(found.dst, found.dport)}  {kind}"
        )
    lines = [head]
    if not found.udp_checksum_ok:
        lines.append("    (UDP checksum wrong)")
    if found.message is None:
        lines.append(f"    malformed: {found.error}")
    else:
        lines.extend(lisp_text.to_text(found.message))
    return lines


def to_json(found: Found) -> dict[str, Any]:
    """The JSON object for one message: where it was seen, then ``message`` or ``malformed``."""
    out: dict[str, Any] = {"index": found.index}
    if found.frame is not None:
        assert found.ts_ns is not None
        out.update(
            frame=found.frame,
            time=found.ts_ns / 1e9,
            src=str(found.src),
            sport=found.sport,
            dst=str(found.dst),
            dport=found.dport,
            udp_checksum_ok=found.udp_checksum_ok,
        )
    if found.message is None:
        out["malformed"] = found.error
    else:
        out["message"] = lisp_text.to_dict(found.message)
    return out


def summary(tally: Tally) -> str:
    text = f"{tally.messages} LISP message(s), {tally.malformed} malformed"
    if tally.frames:
        ignored = tally.not_ip + tally.bad_ip + tally.other_traffic
        text += f"; {tally.frames} frame(s) read, {ignored} not LISP control on port(s) "
        text += ",".join(str(p) for p in tally.ports)
        if tally.bad_ip:
            text += f" ({tally.bad_ip} with a damaged IP/UDP header)"
    return text


def emit(found_iter: Iterable[Found], *, as_json: bool, out: TextIO) -> None:
    first = True
    for found in found_iter:
        if as_json:
            out.write(json.dumps(to_json(found)) + "\n")
        else:
            if not first:
                out.write("\n")
            out.write("\n".join(to_text(found)) + "\n")
        first = False


# -- command -----------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "decode",
        help="print the LISP control messages in a pcap/pcapng file or hex strings",
        description=(
            "Print every LISP control message (UDP to or from port 4342, ECM inner messages included) "
            "in a pcap or pcapng capture, or given as hex. Exit 0 if all decoded, 1 if any was "
            "malformed, 2 if the input could not be read."
        ),
    )
    parser.add_argument(
        "file", nargs="?", help="capture file, or - to read hex messages one per line from stdin"
    )
    parser.add_argument(
        "--hex", action="append", default=[], metavar="HEX", help="a LISP message as hex (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("--sample", action="store_true", help="decode the bundled sample capture")
    parser.add_argument(
        "--port", action="append", type=int, default=None, metavar="PORT",
        help="UDP port that marks LISP control traffic (repeatable; default 4342)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sample:
        args.file = str(resources.files("alt_router").joinpath("data/sample.pcap"))
    return decode_inputs(
        file=args.file, hex_strings=args.hex, as_json=args.json, ports=args.port or DEFAULT_PORTS,
        out=sys.stdout, err=sys.stderr,
    )


def decode_inputs(
    *, file: str | None, hex_strings: Sequence[str], as_json: bool, ports: Sequence[int], out: TextIO,
    err: TextIO,
) -> int:
    """The whole command, with its streams passed in (``demo`` reuses it)."""
    if file is None and not hex_strings:
        err.write("alt-router decode: give a capture FILE, - for hex on stdin, or --hex HEX\n")
        return 2
    if any(not 0 < p <= 0xFFFF for p in ports):
        err.write("alt-router decode: --port must be 1..65535\n")
        return 2
    tally = Tally(ports=tuple(ports))
    status = 0
    try:
        if hex_strings:
            emit(scan_hex(hex_strings, tally), as_json=as_json, out=out)
        if file == "-":
            emit(scan_hex(sys.stdin, tally), as_json=as_json, out=out)
        elif file is not None:
            emit(scan_frames(pcap.read_file(file), tally), as_json=as_json, out=out)
    except HexError as exc:
        err.write(f"alt-router decode: {exc}\n")
        status = 2
    except BrokenPipeError:
        raise  # the reader went away (| head): the CLI exits quietly
    except OSError as exc:
        err.write(f"alt-router decode: cannot read {file}: {exc.strerror or exc}\n")
        status = 2
    except pcap.PcapError as exc:
        err.write(f"alt-router decode: {file}: {exc}\n")
        status = 2
    if not as_json:
        out.write(f"\n{summary(tally)}\n" if tally.messages else f"{summary(tally)}\n")
    if status:
        return status
    return 1 if tally.malformed else 0
