"""One CSV cell as Breakout writes it: the API's ``format=csv`` and the portal's Download CSV alike.

A spreadsheet opening a CSV runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (some
also after a leading tab or carriage return) as a formula, and customer and destination names
come from CDRs: a name like ``=HYPERLINK(...)`` or ``+cmd|' /C calc'!A0`` would run on a finance
desk. Such a cell gets a leading ``'``, which spreadsheets show as text. A plain number keeps
its sign: ``-1.500000`` is a loss, not a formula. Then a cell holding ``"``, ``,``, CR or LF is
quoted, as RFC 4180 says.

The portal runs the same rule in ``api/static/csv-cells.js`` (the two patterns are written
alike); ``tests/csv_cells.json`` holds the cases both are tested against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A cell starting with a formula character, unless the whole cell is a plain decimal number.
_FORMULA = re.compile(r"(?!-[0-9]+(?:\.[0-9]+)?\Z)[=+\-@\t\r]")
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def csv_cell(value: str | int | None) -> str:
    """``value`` as one CSV cell: empty for None, formulas neutralised, quoted when needed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)  # a count: digits, perhaps after a minus, which the rule leaves as they are
    if _FORMULA.match(value):
        value = "'" + value
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Iterable[str | int | None]) -> str:
    """One CSV record, CRLF-terminated."""
    return ",".join([csv_cell(value) for value in values]) + "\r\n"
