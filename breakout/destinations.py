"""Destination resolution: the longest dial-code prefix of a dialed number names its breakout.

The table is a dict from prefix to name, so a lookup tries at most one prefix per
digit of the number (longest first): its cost follows the number's length, never
the table's size, and the longest match always wins.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from breakout.errors import ConfigError

UNKNOWN = "Unknown"
_HEAD = 3


class DialCodes:
    """A dial-code table (prefix → destination name) with longest-prefix lookup."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)
        # The longest code that can match a number, by its first three digits: a number can
        # only match codes of at most three digits or codes that start with those three, so
        # a lookup starts there rather than at the table's longest code (most are 5 to 7
        # digits long, a few 9).
        self._reach: dict[str, int] = {}
        for prefix in self._table:
            head = prefix[:_HEAD]
            self._reach[head] = max(self._reach.get(head, _HEAD), len(prefix))

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, number: str) -> str:
        """The name of the longest prefix of ``number`` (digits only), or ``Unknown``."""
        table = self._table
        for length in range(min(len(number), self._reach.get(number[:_HEAD], _HEAD)), 0, -1):
            name = table.get(number[:length])
            if name is not None:
                return name
        return UNKNOWN

    @classmethod
    def from_csv_text(cls, text: str, source: str) -> DialCodes:
        """Parse ``prefix,destination`` rows (header optional); bad rows are a ``ConfigError``."""
        table: dict[str, str] = {}
        for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or (line_number == 1 and row[0].strip().lower() == "prefix"):
                continue
            prefix = row[0].strip() if row else ""
            if len(row) != 2 or not (prefix.isdigit() and prefix.isascii()) or not row[1].strip():
                raise ConfigError(f"{source}:{line_number}: expected 'prefix,destination', got {row!r}")
            table[prefix] = row[1].strip()
        if not table:
            raise ConfigError(f"{source}: no dial codes")
        return cls(table)


def load_dial_codes(path: Path | None) -> DialCodes:
    """The operator's table at ``path`` (BREAKOUT_DIAL_CODES), else the shipped one."""
    if path is None:
        text = resources.files("breakout.data").joinpath("dial_codes.csv").read_text(encoding="utf-8")
        return DialCodes.from_csv_text(text, "dial_codes.csv")
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets save CSV with a BOM
    except OSError as exc:
        raise ConfigError(f"BREAKOUT_DIAL_CODES={path}: {exc.strerror}") from None
    return DialCodes.from_csv_text(text, f"BREAKOUT_DIAL_CODES={path}")


def resolve(given: str | None, dst: str, dial_codes: DialCodes) -> str:
    """The platform's own destination name wins; otherwise the dial-code lookup decides."""
    return given if given else dial_codes.lookup(dst)
