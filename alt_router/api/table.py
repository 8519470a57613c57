"""Aligned text tables for the CLI, the way vtysh and birdc print them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    if isinstance(value, list | tuple):
        return " ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _numeric(values: list[object]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numeric columns right-aligned; no trailing spaces."""
    raw = [list(r) for r in rows]
    for r in raw:
        if len(r) != len(headers):
            raise ValueError(f"row has {len(r)} cells, the table has {len(headers)} columns")
    text = [[cell(v) for v in r] for r in raw]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    right = [_numeric([r[i] for r in raw]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in text)])


def format_duration(seconds: float | None) -> str:
    """Uptime as BGP implementations show it: 00:05:12, 3d04h."""
    if seconds is None:
        return "never"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours:02d}:{minutes:02d}:{s:02d}"
