"""LISP control messages as plain data (for JSON and the API) and as indented text.

``to_dict`` is the stable machine form: the message's own field names, with
``type`` naming the message (``"Map-Request"``), nonces and IDs as fixed-width
hex strings, addresses as text, actions as their lower-case names, LCAFs as
objects with an ``lcaf`` key and byte strings as hex.  Records also carry a
``prefix`` (``"10.0.0.0/8"``, ``"[iid 7] 10.0.0.0/8"``) so a reader does not
have to join ``eid`` and ``mask_len``.

It walks the codec's dataclasses rather than naming their fields, so a field
the codec adds later shows up here without a change.  ``to_text`` renders that
dict for people: booleans gathered on one ``flags:`` line, records as a list.
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from alt_router import lisp

_MESSAGE_CLASSES = (lisp.MapRequest, lisp.MapReply, lisp.MapRegister, lisp.MapNotify, lisp.ECM)


# Class name -> LCAF name (RFC 8060 §4) for the address types the codec models.
LCAF_NAMES = {"InstanceId": "instance-id", "AfiList": "afi-list", "UnknownLcaf": "unknown"}

# Integer fields people compare as hex (how tshark and other tools print them), with their width in bits.
_HEX_FIELDS = {"nonce": 64, "xtr_id": 128, "site_id": 64}


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def message_type(msg: object) -> str:
    """The RFC name of a message object (``"Map-Request"``)."""
    if isinstance(msg, _MESSAGE_CLASSES):
        return lisp.message_type(msg).rfc_name
    return _kebab(type(msg).__name__)


def to_dict(msg: object) -> dict[str, Any]:
    """The JSON-ready form of a decoded message (see the module doc for the conventions)."""
    value = _value(msg, "")
    assert isinstance(value, dict)
    return value


def _value(obj: object, field: str) -> Any:
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, Enum):
        return obj.name.lower().replace("_", "-")
    if isinstance(obj, int):
        bits = _HEX_FIELDS.get(field)
        return f"0x{obj:0{bits // 4}x}" if bits else obj
    if isinstance(obj, IPv4Address | IPv6Address):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, tuple | list):
        return [_value(item, field) for item in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass(obj)
    return str(obj)


def _dataclass(obj: Any) -> dict[str, Any]:
    name = type(obj).__name__
    out: dict[str, Any] = {}
    if name in LCAF_NAMES:
        out["lcaf"] = LCAF_NAMES[name]
    elif isinstance(obj, _MESSAGE_CLASSES) or hasattr(obj, "nonce"):
        out["type"] = message_type(obj)
    for f in dataclasses.fields(obj):
        if not f.name.startswith("_"):
            out[f.name] = _value(getattr(obj, f.name), f.name)
    if "eid" in out and isinstance(out.get("mask_len"), int):
        out = {"prefix": f"{address_text(out['eid'])}/{out['mask_len']}", **out}
    return out


def address_text(addr: Any) -> str:
    """One-line text of an address in ``to_dict`` form."""
    if addr is None:
        return "(no address)"
    if isinstance(addr, dict):
        kind = addr.get("lcaf")
        if kind == "instance-id":
            mask = f"/{addr['iid_mask_len']}" if addr.get("iid_mask_len") else ""
            return f"[iid {addr['instance_id']}{mask}] {address_text(addr['address'])}"
        if kind == "afi-list":
            return "(" + ", ".join(address_text(a) for a in addr["addresses"]) + ")"
        if kind == "unknown":
            return f"LCAF type {addr.get('lcaf_type')} ({addr.get('body', '')})"
    return str(addr)


# -- text ------------------------------------------------------------------------------------------------

_ADDRESS_FIELDS = {"eid", "source_eid", "address", "itr_rlocs", "addresses"}


def to_text(msg: object, indent: str = "    ") -> list[str]:
    """Indented lines describing a message (no header line: the caller prints frame and addresses)."""
    return _lines(to_dict(msg), indent)


def _scalar(key: str, value: Any) -> str:
    if key in _ADDRESS_FIELDS:
        if isinstance(value, list):
            return ", ".join(address_text(v) for v in value) or "(none)"
        return address_text(value)
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def _is_compound(key: str, value: Any) -> bool:
    if key in _ADDRESS_FIELDS:
        return False
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def _lines(d: dict[str, Any], indent: str) -> list[str]:
    """A message (or nested message) as ``key: value`` lines."""
    flags = [k for k, v in d.items() if isinstance(v, bool) and v]
    out = [f"{indent}flags: {' '.join(flags) if flags else 'none'}"]
    for key, value in d.items():
        if key == "type" or isinstance(value, bool) or _empty(value):
            continue
        if not _is_compound(key, value):
            out.append(f"{indent}{key}: {_scalar(key, value)}")
        elif isinstance(value, dict):
            out.append(f"{indent}{key}: {value.get('type', '')}".rstrip())
            out.extend(_lines(value, indent + "    "))
        else:
            out.extend(_list_lines(key, value, indent))
    return out


def _list_lines(key: str, items: list[Any], indent: str) -> list[str]:
    out = [f"{indent}{key} ({len(items)}):"]
    for item in items:
        out.extend(_item(item, indent + "  ") if isinstance(item, dict) else [f"{indent}  - {item}"])
    return out


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _item(d: dict[str, Any], indent: str) -> list[str]:
    """A record or locator: one summary line, then what it nests."""
    lead = d.get("prefix") or (address_text(d["address"]) if "address" in d else "")
    parts = [lead] if lead else []
    nested: list[str] = []
    for key, value in d.items():
        if key in ("prefix", "eid", "mask_len", "address") or isinstance(value, bool) or _empty(value):
            continue
        if key == "locators" and value == []:
            parts.append("negative")  # RFC 9301 §5.4: a record without locators is a negative mapping
        elif not _is_compound(key, value):
            parts.append(f"{key}={_scalar(key, value)}")
        elif isinstance(value, dict):
            nested.append(f"{indent}  {key}:")
            nested.extend(_lines(value, indent + "    "))
        else:
            nested.extend(_list_lines(key, value, indent + "  "))
    flags = [k for k, v in d.items() if isinstance(v, bool) and v]
    if flags:
        parts.append(f"[{' '.join(flags)}]")
    return [f"{indent}- {' '.join(parts)}", *nested]
