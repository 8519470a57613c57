"""Construction of frozen dataclasses without ``__init__`` for the decoder's hot path.

A frozen dataclass ``__init__`` pays ``object.__setattr__`` per field (about three
times the cost of a plain slot store).  The decoder has already checked every
value it read, so it fills the slots through their descriptors directly and
skips ``__post_init__``.  Only the decoder may use this: objects built by hand
go through ``__init__`` and its checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def maker(cls: type[T]) -> Callable[..., T]:
    """A function ``make(*field_values) -> cls`` taking the fields in declaration order."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    args = ", ".join(names)
    body = [f"def make({args}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_s{i}"] = getattr(cls, name).__set__
        body.append(f"    _s{i}(o, {name})")
    body.append("    return o")
    exec("\n".join(body), env)  # source built from dataclass field names only
    make: Callable[..., T] = env["make"]
    return make
