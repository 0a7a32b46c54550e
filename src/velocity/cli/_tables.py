"""Terminal tables that fit the terminal: columns are chosen by width, cells are never cut.

A table that does not fit drops its least important columns (named under it) rather than
squeezing every cell into ``fedav…``; ``--json`` and ``--csv`` give every column to tools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Column", "fit_columns", "print_fitted_table"]


@dataclass(frozen=True)
class Column:
    """One table column: ``key`` into the row dicts (cells already formatted as text).

    ``keep`` columns are always shown, whatever the width; the others are shown by ascending
    ``drop_order`` (0 = the most wanted) while the table still fits."""

    key: str
    header: str
    justify: str = "left"
    keep: bool = False
    drop_order: int = 0
    style: str | None = None


def _width(column: Column, rows: Sequence[Mapping[str, str]]) -> int:
    return max([cell_len(column.header), *(cell_len(row[column.key]) for row in rows)])


def fit_columns(
    columns: Sequence[Column], rows: Sequence[Mapping[str, str]], width: int
) -> tuple[list[Column], list[Column]]:
    """``(shown, hidden)``, both in table order: every kept column, then the others in
    ``drop_order`` as long as the whole table (borders and padding included) fits ``width``."""
    # A rich table with its default box: one border per column plus one, and one space of
    # padding either side of every cell.
    used = 1 + sum(_width(c, rows) + 3 for c in columns if c.keep)
    chosen = {c.key for c in columns if c.keep}
    for column in sorted((c for c in columns if not c.keep), key=lambda c: c.drop_order):
        extra = _width(column, rows) + 3
        if used + extra <= width:
            chosen.add(column.key)
            used += extra
    shown = [c for c in columns if c.key in chosen]
    hidden = [c for c in columns if c.key not in chosen]
    return shown, hidden


def print_fitted_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, str]],
    *,
    title: str | None = None,
    row_styles: Sequence[str | None] | None = None,
    hint: str = "--json or --csv",
) -> list[Column]:
    """Print ``rows`` with the columns that fit the console; returns the hidden columns (named
    in a line under the table, with where to find them)."""
    from rich.markup import escape
    from rich.table import Table

    shown, hidden = fit_columns(columns, rows, console.width)
    table = Table(title=title)
    for column in shown:
        # Kept cells never end in an ellipsis: in a terminal too narrow even for them they fold
        # onto a second line, every character still there.
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=not column.keep,
            overflow="fold",
            style=column.style,
        )
    for index, row in enumerate(rows):
        style: Any = row_styles[index] if row_styles is not None else None
        table.add_row(*(row[c.key] for c in shown), style=style)
    console.print(table)
    if hidden:
        console.print(
            f"[dim]not shown at {console.width} columns: "
            f"{escape(', '.join(c.header for c in hidden))} (a wider terminal or {hint} shows "
            "them)[/]",
            highlight=False,
        )
    return hidden
