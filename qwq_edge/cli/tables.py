"""Tables that fit the terminal without breaking a word.

Rich shrinks every column of a table that is too wide, down to a few letters each
("rep/osi/tor/y"). Here the widths are chosen first: a column that wraps does so
between words only, and when even that is too wide the least important columns are
left out. Without a terminal (a pipe, a file) nothing is cut: the table is as wide
as its longest row, unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table


@dataclass(frozen=True)
class Field:
    """One column: its header, whether it may wrap between words, and when it is left out
    on a narrow terminal (``drop``: 1 goes first, then 2…; ``None``: always shown)."""

    header: str
    wraps: bool = False
    drop: int | None = None


def _overhead(columns: int) -> int:
    """A bordered table's width beyond its cells: one space each side of a cell, and the rules."""
    return 3 * columns + 1


def _longest_word(texts: Sequence[str]) -> int:
    return max(cell_len(word) for text in texts for word in text.split() or [""])


def room(console: Console) -> int | None:
    """The width a table may take: the terminal's, or ``COLUMNS``; ``None`` (any) when neither is known."""
    return console.width if console.is_terminal or "COLUMNS" in os.environ else None


def fit_widths(fields: Sequence[Field], rows: Sequence[Sequence[str]], width: int | None) -> dict[int, int]:
    """The columns shown (by index) and their widths, together at most ``width`` wide when they can be."""
    cells = [[field.header, *(row[i] for row in rows)] for i, field in enumerate(fields)]
    natural = [max(cell_len(text) for text in column) for column in cells]
    least = [_longest_word(cells[i]) if field.wraps else natural[i] for i, field in enumerate(fields)]
    shown = list(range(len(fields)))
    droppable = sorted((i for i, f in enumerate(fields) if f.drop is not None), key=lambda i: fields[i].drop)
    while width is not None and droppable and sum(least[i] for i in shown) + _overhead(len(shown)) > width:
        shown.remove(droppable.pop(0))
    if width is None:
        return {i: natural[i] for i in shown}
    widths = {i: least[i] for i in shown}
    spare = width - sum(widths.values()) - _overhead(len(shown))
    # The column that would wrap into the most lines gets the spare width first.
    for i in sorted(shown, key=lambda i: least[i] - natural[i]):
        grow = max(0, min(spare, natural[i] - widths[i]))
        widths[i] += grow
        spare -= grow
    return widths


def print_fitted(console: Console, fields: Sequence[Field], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``fields`` as a table that fits ``console`` (see the module's docstring);
    without a terminal, ``console`` is widened to the table's width."""
    limit = room(console)
    widths = fit_widths(fields, rows, limit)
    if limit is None:
        console.width = max(console.width, sum(widths.values()) + _overhead(len(widths)))
    table = Table(*(Column(fields[i].header, width=w, overflow="fold") for i, w in widths.items()))
    for row in rows:
        table.add_row(*(row[i] for i in widths))
    console.print(table)
