"""What the node config and the lab file share: pydantic field types and error wording.

The files' shapes are pydantic models (``alt_router.node.config_model``,
``alt_router.lab.topology_model``): types, ranges, defaults, choices, descriptions, and unknown
keys refused.  This module holds the field types those models are built from, whose parsing an
operator reads about (a prefix with host bits set suggests the right one), and turns pydantic's
``ValidationError`` into the project's one-line problems, ``dotted.key[0].name: what is wrong``,
every problem of a file at once.

Edge code: the core never reads a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Interface,
    ip_address,
    ip_interface,
    ip_network,
)
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainValidator,
    Strict,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from alt_router.types import IPAddress, Prefix

Interface = IPv4Interface | IPv6Interface

Loc = tuple[int | str, ...]


def tname(value: object) -> str:
    """A TOML value's kind, as an operator calls it."""
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --- converters: each raises ValueError (pydantic turns only ValueError into a problem) ----------------

def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {tname(value)}")
    return value


def _name(value: Any) -> str:
    s = _str(value)
    if not s or not all(c.isalnum() or c in "-_." for c in s):
        raise ValueError(f"{s!r} is not a valid name (letters, digits, '-', '_', '.')")
    return s


def _name_or_empty(value: Any) -> str:
    return "" if value == "" else _name(value)


def _secret(value: Any) -> str:
    s = _str(value)
    if not s:
        raise ValueError("must not be empty")
    return s


def _path(value: Any) -> Path:
    return Path(_secret(value))


def _address(value: Any) -> IPAddress:
    s = _str(value)
    try:
        return ip_address(s)
    except ValueError:
        raise ValueError(f"{s!r} is not an IPv4 or IPv6 address") from None


def _ipv4(value: Any) -> IPv4Address:
    addr = _address(value)
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{value!r} is not an IPv4 address")
    return addr


def _prefix(value: Any) -> Prefix:
    s = _str(value)
    if "/" not in s:
        raise ValueError(f"{s!r} needs a prefix length, e.g. {s}/24")
    try:
        return ip_network(s, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ip_network(s, strict=False)
            raise ValueError(f"{s!r} has host bits set (did you mean {fixed}?)") from None
        raise ValueError(f"{s!r} is not an IP prefix") from None


def _interface(value: Any) -> Interface:
    s = _str(value)
    if "/" not in s:
        raise ValueError(f"{s!r} needs a prefix length, e.g. {s}/30")
    try:
        return ip_interface(s)
    except ValueError:
        raise ValueError(f"{s!r} is not an address with a prefix length") from None


def _no_duplicates(values: tuple[Any, ...]) -> tuple[Any, ...]:
    dupes = sorted({str(p) for p in values if values.count(p) > 1})
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return values


def _asn(value: int) -> int:
    if value == 23456:
        raise ValueError("23456 is AS_TRANS (RFC 6793), not a real AS number")
    return value


# --- field types -------------------------------------------------------------------------------------
# Addresses and prefixes are parsed by hand (PlainValidator): the ipaddress module's own errors and
# pydantic's generic ones name neither the missing prefix length nor the prefix that was meant.

_STRING = {"type": "string"}

Name = Annotated[str, PlainValidator(_name), WithJsonSchema({**_STRING, "pattern": r"^[A-Za-z0-9._-]+$"})]
NameOrEmpty = Annotated[
    str, PlainValidator(_name_or_empty), WithJsonSchema({**_STRING, "pattern": r"^[A-Za-z0-9._-]*$"})
]
Secret = Annotated[str, PlainValidator(_secret), WithJsonSchema({**_STRING, "minLength": 1})]
FilePath = Annotated[Path, PlainValidator(_path), WithJsonSchema({**_STRING, "minLength": 1})]
_ANY_ADDRESS = {**_STRING, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
Address = Annotated[IPAddress, PlainValidator(_address), WithJsonSchema(_ANY_ADDRESS)]
IPv4 = Annotated[IPv4Address, PlainValidator(_ipv4), WithJsonSchema({**_STRING, "format": "ipv4"})]
PrefixT = Annotated[
    Prefix, PlainValidator(_prefix),
    WithJsonSchema({**_STRING, "pattern": r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$", "examples": ["153.16.0.0/16"]}),
]
InterfaceT = Annotated[
    Interface, PlainValidator(_interface),
    WithJsonSchema({**_STRING, "pattern": r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$", "examples": ["10.255.1.1/30"]}),
]
Prefixes = Annotated[tuple[PrefixT, ...], AfterValidator(_no_duplicates)]
Asn = Annotated[int, Strict(), annotated_types.Ge(1), annotated_types.Le(0xFFFFFFFF), AfterValidator(_asn)]


# --- errors ------------------------------------------------------------------------------------------

def dotted(loc: Sequence[int | str]) -> str:
    """``("peers", 1, "max_prefix")`` -> ``peers[1].max_prefix``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problems(exc: ValidationError, model: Any, prefix: Loc = ()) -> list[str]:
    """One ``dotted.key: problem`` line per error; ``model`` is the type validated at ``prefix``."""
    errors = exc.errors(include_url=False)
    # pydantic counts only the valid items against min_length: an array whose one item is bad is
    # also "too short", which would send the operator looking for a missing entry.
    inside = {tuple(e["loc"][:-i]) for e in errors for i in range(1, len(e["loc"]))}
    return [f"{dotted(prefix + tuple(err['loc']))}: {_message(err, model, tuple(err['loc']), prefix)}"
            for err in errors if not (err["type"] == "too_short" and tuple(err["loc"]) in inside)]


def _message(err: Any, model: Any, loc: Loc, prefix: Loc) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required table" if _is_model(_type_at(model, loc)) else "missing required key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table, not {tname(value)}"
    if kind in ("tuple_type", "list_type"):
        items = get_args(_type_at(model, loc))
        if items and _is_model(items[0]):
            return f"must be an array of tables ([[{dotted(prefix + loc)}]]), not {tname(value)}"
        return f"must be an array, not {tname(value)}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be an integer, not {tname(value)}"
    if kind == "float_type":
        return f"must be a number, not {tname(value)}"
    if kind == "bool_type":
        return f"must be true or false, not {tname(value)}"
    if kind == "string_type":
        return f"must be a string, not {tname(value)}"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        lo, hi = _bounds(model, loc)
        if kind == "greater_than":
            return f"{value} must be greater than {ctx['gt']}"
        if lo is not None and hi is not None:
            return f"{value} is out of range {lo}..{hi}"
        return f"{value} must be at {'least ' + str(lo) if lo is not None else 'most ' + str(hi)}"
    if kind == "too_long":
        return f"must list at most {ctx.get('max_length')} entries"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must list at least one entry" if n == 1 else f"must list at least {n} entries"
    return str(err["msg"])


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """(the type under Annotated and Optional, the Annotated metadata on the way)."""
    meta: list[Any] = []
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp, *more = get_args(tp)
            meta += more
        elif origin in (Union, UnionType):
            args = [a for a in get_args(tp) if a is not NoneType]
            if len(args) != 1:
                return tp, meta
            tp = args[0]
        else:
            return tp, meta


def _walk(model: Any, loc: Loc) -> Iterator[tuple[Any, list[Any]]]:
    """The declared type (and its constraints) at each step of ``loc`` under ``model``."""
    tp, meta = _unwrap(model)
    for part in loc:
        if isinstance(part, str) and _is_model(tp) and part in tp.model_fields:
            field = tp.model_fields[part]
            tp, meta = _unwrap(field.annotation)
            meta = list(field.metadata) + meta
        elif isinstance(part, int) and get_origin(tp) in (tuple, list):
            tp, meta = _unwrap(get_args(tp)[0])
        elif isinstance(part, str) and get_origin(tp) is dict:
            tp, meta = _unwrap(get_args(tp)[1])
        else:
            return
        yield tp, meta


def _type_at(model: Any, loc: Loc) -> Any:
    steps = list(_walk(model, loc))
    return steps[-1][0] if steps else _unwrap(model)[0]


def _bounds(model: Any, loc: Loc) -> tuple[Any, Any]:
    steps = list(_walk(model, loc))
    meta = steps[-1][1] if steps else []
    lo = next((m.ge for m in meta if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in meta if isinstance(m, annotated_types.Le)), None)
    for m in meta:
        if isinstance(m, annotated_types.Interval):
            lo, hi = m.ge if m.ge is not None else lo, m.le if m.le is not None else hi
    return lo, hi


# --- JSON Schema -------------------------------------------------------------------------------------

class StrictTable(BaseModel):
    """A TOML table: unknown keys are refused (a typo such as max_prefixes must not silently fall
    back to a default on a router), and the parsed table is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TomlJsonSchema(GenerateJsonSchema):
    """Draft 2020-12 as pydantic emits it, minus ``null``: TOML has no null, a key is just left out."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # the key is its own title; the description says what it is

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        # A table's default is its keys' defaults, each shown on the key; and null is no TOML value.
        if out.get("default", 0) is None or isinstance(out.get("default"), dict):
            del out["default"]
        return out


def json_schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    """``model``'s JSON Schema (draft 2020-12) for a TOML file, with ``title``."""
    out = model.model_json_schema(schema_generator=TomlJsonSchema)
    return {"$schema": TomlJsonSchema.schema_dialect, **out, "title": title}
