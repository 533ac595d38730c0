"""The checkpoint table, built once for every place that shows it.

:func:`checkpoint_table` turns summary.json checkpoint entries (or stage results in that shape)
into the columns :data:`gptwaves.schema.COLUMNS` declares for a place and one row of formatted
:class:`Cell` per checkpoint. The run report (HTML template), the claims page of ``gptwaves publish
run`` (Markdown) and the ``spelling`` / ``waves`` commands (plain text) only lay these cells out, so
a column shows the same text in all three. docs/outputs.md, "The result schema".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .schema import COLUMNS, PLACES, Column

__all__ = ["Cell", "Table", "checkpoint_table", "fmt_number"]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Cell:
    """A formatted table cell: the value, its CI, a significance mark, a p-value, a verdict."""

    value: str = "—"
    ci: tuple[str, str] | None = None
    mark: bool = False
    p: str | None = None
    verdict: str | None = None

    @property
    def text(self) -> str:
        """The cell as plain text (the CLI and Markdown; the report shows the same parts)."""
        if self.verdict is not None:
            return self.verdict
        s = self.value
        if self.ci is not None:
            s += f" [{self.ci[0]}, {self.ci[1]}]"
        if self.mark:
            s += " *"
        if self.p is not None:
            s += f" (p {self.p})"
        return s


@dataclass
class Table:
    """The checkpoint table of one place: its columns (label, note filled in) and its rows."""

    columns: list[Column]
    notes: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    tap: str | None = None
    floor: str | None = None

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.columns]


def fmt_number(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` significant digits, integers as integers, very
    small or large values in scientific notation; "—" when missing or not finite."""
    if isinstance(v, bool) or not _is_num(v):
        return str(v) if isinstance(v, str) and v else "—"
    f = float(v)
    if isinstance(v, int) or (f == int(f) and 10 ** digits <= abs(f) < 1e15):
        return f"{int(f)}"
    if f != 0 and (abs(f) < 1e-3 or abs(f) >= 1e6):
        return f"{f:.{max(digits - 1, 1)}e}"
    if abs(f) >= 10 ** digits:
        return f"{f:.0f}"
    return f"{f:.{digits}g}"


def _cell(col: Column, entry: dict, tap: str | None, floor: str | None, tap_name: str | None) -> Cell:
    def at(path):
        if path is None:
            return None
        if ("{tap}" in path and tap is None) or ("{floor}" in path and floor is None):
            return None
        node = entry  # tap names hold dots (blocks.5.hook_resid_post): one key each
        for k in path.split("."):
            k = tap if k == "{tap}" else floor if k == "{floor}" else k
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    if col.key == "tap":
        return Cell(value=tap_name or "—")
    if col.verdict is not None:
        v = at(col.verdict)
        return Cell(verdict=v if isinstance(v, str) and v else "—")
    ci = at(col.ci) if col.ci else None
    ci_cell = None
    if col.ci is not None and isinstance(ci, list) and len(ci) == 2 and (_is_num(ci[0]) or _is_num(ci[1])):
        ci_cell = (fmt_number(ci[0], col.digits), fmt_number(ci[1], col.digits))
    p = at(col.p) if col.p else None
    return Cell(value=fmt_number(at(col.value), col.digits), ci=ci_cell, mark=at(col.mark) is True,
                p=(fmt_number(p, 2) if _is_num(p) else None))


def checkpoint_table(checkpoints: list, place: str, *, tap: str | None = None, floor: str | None = None) -> Table:
    """The checkpoint table shown at ``place`` (one of :data:`PLACES`): for the summary.json
    checkpoint entries ``checkpoints`` (or the same shape: ``iteration``, ``val_loss``,
    ``spelling``, ``waves``), the columns declared for that place and one row per checkpoint
    (``cli-waves``: one per checkpoint and tap). ``tap`` / ``floor``: the focus tap and the input
    floor of the waves columns."""
    if place not in PLACES:
        raise ValueError(f"unknown place {place!r}")
    cols = [c for c in COLUMNS if place in c.places]
    notes = [(c.note or "").replace("{tap}", tap or "").replace("{floor}", floor or "not recorded")
             if c.note else "" for c in cols]
    table = Table(columns=cols, notes=notes, tap=tap, floor=floor)
    for c in checkpoints:
        if not isinstance(c, dict):
            continue
        if place == "cli-waves":
            taps = c.get("waves") if isinstance(c.get("waves"), dict) else {}
            for t in taps:
                table.rows.append([_cell(col, c, t, floor, t) for col in cols])
        else:
            table.rows.append([_cell(col, c, tap, floor, tap) for col in cols])
    return table
