"""``alt-router etr``: a stand-alone ETR control plane that registers EID prefixes and answers Map-Requests.

    alt-router etr --map-server 192.0.2.10 --key K --eid 10.1.0.0/16 --rloc 192.0.2.1,1,100

or ``--config node.toml`` to take everything from the node's ``[etr]`` section.
Runs until SIGINT/SIGTERM; registers at once and then every ``--interval`` s.

Map-Register nonces increase (RFC 9301 §5.6) and the last one is kept in
``--state-dir`` (with ``--config``: the node's ``state_dir``) across restarts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import select
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from alt_router.inet import InetError, address
from alt_router.lisp import LISP_CONTROL_PORT
from alt_router.mapping.etr import Etr, EtrMappingConfig, EtrRloc, MapServerTarget, initial_nonce
from alt_router.mapping.map_server import ALGORITHMS
from alt_router.node.config import ConfigError, NodeConfig, load_config
from alt_router.node.etr_state import NonceStore, nonce_path
from alt_router.node.mapping import etr_inputs
from alt_router.node.udp import bound_port, open_udp, send_all

log = logging.getLogger("alt_router.etr")

_ALG_NAMES = {"sha1": "hmac-sha1-96", "sha256": "hmac-sha256-128", **{a: a for a in ALGORITHMS}}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("etr", help="run an ETR: register EID prefixes with Map-Servers, answer Map-Requests")
    p.add_argument("--config", help="node TOML file: use its [etr] section")
    p.add_argument("--map-server", action="append", default=[], help="Map-Server address (repeatable)")
    p.add_argument("--map-server-port", type=int, default=LISP_CONTROL_PORT, help="its UDP port (4342)")
    p.add_argument("--key", help="authentication key shared with the Map-Server(s)")
    p.add_argument("--alg", choices=sorted(_ALG_NAMES), default="sha256", help="HMAC algorithm (sha256)")
    p.add_argument("--eid", action="append", default=[], help="EID prefix to register (repeatable)")
    p.add_argument("--rloc", action="append", default=[],
                   help="ADDR[,PRIORITY[,WEIGHT]] locator for every --eid (repeatable)")
    p.add_argument("--ttl", type=int, default=1440, help="record TTL in minutes (1440)")
    p.add_argument("--listen", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    p.add_argument("--port", type=int, default=LISP_CONTROL_PORT, help="UDP port to listen on (4342)")
    p.add_argument("--register-port", type=int, default=None,
                   help="send Map-Registers from this port instead (0: ephemeral, as RFC 9301 §5.6 allows); "
                        "Map-Notifies and Map-Requests are still received on --port")
    p.add_argument("--interval", type=float, default=None, help="seconds between Map-Registers (60)")
    p.add_argument("--proxy-reply", action="store_true", help="ask the Map-Server to answer for us (P bit)")
    p.add_argument("--auth-length", choices=("full", "truncated"), default="full",
                   help="HMAC length in Map-Registers: the full 20/32-byte digest deployed Map-Servers "
                        "expect (default), or the 12/16 bytes of the algorithm names")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where the last Map-Register nonce is kept (default: the config's state_dir)")
    p.set_defaults(func=run)


def _rloc(text: str) -> EtrRloc:
    parts = text.split(",")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"--rloc {text!r}: expected ADDR[,PRIORITY[,WEIGHT]]")
    prio = int(parts[1]) if len(parts) > 1 else 1
    weight = int(parts[2]) if len(parts) > 2 else 100
    if not (0 <= prio <= 255 and 0 <= weight <= 255):
        raise ValueError(f"--rloc {text!r}: priority and weight are 0..255")
    return EtrRloc(address(parts[0]), prio, weight)


def build(args: argparse.Namespace, last_nonce: int = 0) -> Etr:
    """The ETR core from the command line (raises ValueError with an operator-facing message)."""
    if args.config:
        cfg = load_config(args.config).etr
        mappings, servers = etr_inputs(cfg, args.map_server_port)
        interval = args.interval if args.interval is not None else float(cfg.register_interval)
        proxy = cfg.proxy_reply or args.proxy_reply
    else:
        if not (args.map_server and args.key and args.eid and args.rloc):
            raise ValueError("need --config, or --map-server, --key, --eid and --rloc")
        alg = ALGORITHMS[_ALG_NAMES[args.alg]]
        truncated = args.auth_length == "truncated"
        servers = [MapServerTarget(address(a), args.key, alg, args.map_server_port, truncated_auth=truncated)
                   for a in args.map_server]
        rlocs = tuple(_rloc(r) for r in args.rloc)
        if not 0 <= args.ttl <= 0xFFFFFFFF:
            raise ValueError(f"--ttl {args.ttl} out of range")
        mappings = [EtrMappingConfig(ipaddress.ip_network(e, strict=True), rlocs, args.ttl) for e in args.eid]
        interval = args.interval if args.interval is not None else 60.0
        proxy = args.proxy_reply
    if not servers or not mappings:
        raise ValueError("no Map-Servers or no EID mappings configured")
    if interval <= 0:
        raise ValueError("--interval must be > 0")
    return Etr(mappings, servers, register_interval=interval, proxy_reply=proxy, port=args.port,
               last_nonce=last_nonce)


def state_dir(args: argparse.Namespace) -> Path | None:
    if args.state_dir is not None:
        return Path(args.state_dir)
    if args.config:
        return load_config(args.config).node.state_dir
    return None


_DIGEST_LENGTHS = {"hmac-sha1-96": (12, 20), "hmac-sha256-128": (16, 32)}


def etr_auth_notes(config: NodeConfig) -> list[str]:
    """One line per ``[[etr.map_servers]]`` saying which HMAC length its Map-Registers carry, and why."""
    notes = []
    for i, ms in enumerate(config.etr.map_servers if config.etr.enabled else ()):
        short, full = _DIGEST_LENGTHS[ms.algorithm]
        if ms.auth_length == "full":
            notes.append(
                f"note: etr.map_servers[{i}] ({ms.address}): Map-Registers carry the full {full}-byte "
                f"{ms.algorithm} digest, as deployed Map-Servers expect; set auth_length = \"truncated\" "
                f"only for a Map-Server that insists on the {short} bytes of RFC 2404/4868 "
                "(docs/mapping.md, Interoperability)"
            )
        else:
            notes.append(
                f"note: etr.map_servers[{i}] ({ms.address}): auth_length = \"truncated\" sends a "
                f"{short}-byte MAC; Map-Servers that expect the full {full}-byte digest refuse or "
                "misparse it (docs/mapping.md, Interoperability)"
            )
    return notes


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    try:
        directory = state_dir(args)
        store = NonceStore(nonce_path(directory)) if directory is not None else None
        etr = build(args, initial_nonce(store.saved if store else None, time.time()))
        listen = address(args.listen)
    except (ValueError, ConfigError, InetError) as exc:
        print(f"etr: {exc}", file=sys.stderr)
        return 2
    for ms in etr.map_servers:
        if ms.address.version != listen.version:
            print(f"etr: Map-Server {ms.address} is not reachable from a socket on {listen}", file=sys.stderr)
            return 2
    try:
        sock = open_udp(listen, args.port)
    except OSError as exc:
        print(f"etr: cannot listen on {listen} port {args.port}: {exc}", file=sys.stderr)
        return 2
    etr.port = bound_port(sock)
    sockets = {etr.port: sock}
    if args.register_port is not None:
        try:
            reg_sock = open_udp(listen, args.register_port)
        except OSError as exc:
            sock.close()
            print(f"etr: cannot bind the register port {args.register_port}: {exc}", file=sys.stderr)
            return 2
        etr.register_port = bound_port(reg_sock)
        sockets[etr.register_port] = reg_sock
    signal.signal(signal.SIGTERM, _stop)
    prefixes = ", ".join(str(m.prefix) for m in etr.mappings)
    via = "" if etr.register_port is None else f" from port {etr.register_port}"
    print(f"etr: listening on {listen} port {etr.port}, registering {prefixes}{via}", file=sys.stderr,
          flush=True)
    try:
        _loop(etr, sockets, store)
    finally:
        for s in sockets.values():
            s.close()
    return 0


def _loop(etr: Etr, sockets: dict[int, socket.socket], store: NonceStore | None) -> None:
    notified: set[object] = set()
    readers = list(sockets.values())
    while True:
        now = time.monotonic()
        actions = etr.tick(now)
        if store is not None:
            store.save(etr.last_nonce)  # before the Map-Registers leave (RFC 9301 §5.6)
        failed = send_all(sockets, actions)
        if failed:
            log.warning("%d Map-Register(s) could not be sent", failed)
        wait = max(0.0, etr.next_deadline() - time.monotonic())
        ready, _, _ = select.select(readers, [], [], wait)
        for sock in ready:
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                continue
            try:
                src = address(peer[0].split("%")[0])
            except InetError:
                continue
            # A Map-Server that answers at the source port reaches the register socket: same core.
            send_all(sockets, etr.handle(data, src, peer[1], time.monotonic()))
        for ms_addr in etr.last_notify:
            if ms_addr not in notified:
                notified.add(ms_addr)
                # Which MAC the Map-Server signed with: the interop question an operator asks first.
                kinds = sorted(k.split(":", 1)[1] for k in etr.counters
                               if k.startswith("map-notify-auth:") and k != "map-notify-auth:mac-over-xtr-id")
                print(f"etr: registered with Map-Server {ms_addr} (Map-Notify, {'/'.join(kinds)} MAC)",
                      file=sys.stderr, flush=True)
