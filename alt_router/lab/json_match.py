"""JSON subset matching for lab assertions, in the style of FRR's topotests ``json_cmp`` (pure).

A test states only what it cares about and waits for it::

    wait_until(lambda: json_subset(node.status(), {"peers": {"b": {"up": True}}}), 30,
               what="b up", on_timeout=lambda: json_mismatch(node.status(), expected) or "")

Rules: a dict matches when every expected key matches (extra keys in ``actual`` are fine); an
expected value of ``None`` means the key must be *absent*; a list matches when every expected
element matches a distinct element of the actual list, in any order (``ordered_list`` for order);
anything else must be equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class _Ordered:
    __slots__ = ("items",)

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)


def ordered_list(items: Sequence[Any]) -> Any:
    """An expected list whose elements must match the actual list's, position by position."""
    return _Ordered(items)


def json_mismatch(actual: Any, expected: Any, path: str = "$") -> str | None:
    """Why ``actual`` does not contain ``expected`` (the first difference, with its JSON path), or None."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return f"{path}: expected an object, got {_short(actual)}"
        for key, want in expected.items():
            where = f"{path}.{key}"
            if want is None:
                if key in actual:
                    return f"{where}: expected absent, got {_short(actual[key])}"
                continue
            if key not in actual:
                return f"{where}: missing (expected {_short(want)})"
            why = json_mismatch(actual[key], want, where)
            if why is not None:
                return why
        return None
    if isinstance(expected, _Ordered):
        if not isinstance(actual, list) or len(actual) != len(expected.items):
            return f"{path}: expected a list of {len(expected.items)}, got {_short(actual)}"
        for i, (have, want) in enumerate(zip(actual, expected.items, strict=True)):
            why = json_mismatch(have, want, f"{path}[{i}]")
            if why is not None:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {_short(actual)}"
        unused = list(range(len(actual)))
        for i, want in enumerate(expected):
            match = next((j for j in unused if json_mismatch(actual[j], want) is None), None)
            if match is None:
                return f"{path}[{i}]: no element matches {_short(want)} in {_short(actual)}"
            unused.remove(match)
        return None
    if actual != expected or (type(actual) is not type(expected) and not _numbers(actual, expected)):
        return f"{path}: expected {_short(expected)}, got {_short(actual)}"
    return None


def json_subset(actual: Any, expected: Any) -> bool:
    """Does ``actual`` contain ``expected`` (see the module docstring for the rules)?"""
    return json_mismatch(actual, expected) is None


def _numbers(a: Any, b: Any) -> bool:
    # 1 == 1.0 in JSON; True is not 1 there.
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
