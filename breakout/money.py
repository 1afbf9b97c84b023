"""Exact money: integer micro-units (1e-6 of the currency unit), never binary floats.

A rating engine writes at most six decimal places; more is rejected rather than
rounded, because a rounded charge no longer matches the invoice it came from.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

MICROS = 1_000_000
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]{1,6}))?")
# A million currency units on one call attempt is not a tariff but a broken rating engine;
# the cap also keeps sums of many CDRs far inside 64-bit integers.
MAX_MICROS = 1_000_000 * MICROS
_MAX_WHOLE_DIGITS = len(str(MAX_MICROS // MICROS))


class MoneyError(ValueError):
    """A money value that is not a non-negative decimal with at most six places."""


def parse_micros(value: object) -> int:
    """A decimal string or JSON number as non-negative micro-units.

    Floats are read through their shortest decimal repr (``0.1`` is ``"0.1"``),
    which is the text the producer's JSON encoder wrote.
    """
    if isinstance(value, bool):
        raise MoneyError(f"expected a decimal, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise MoneyError(f"must not be negative, got {value}")
        return _capped(value * MICROS, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MoneyError(f"must be finite, got {value!r}")
        text = repr(value)
        if "e" in text or "E" in text:
            text = _plain(text)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise MoneyError(f"expected a decimal string or number, got {type(value).__name__}")
    match = _DECIMAL.fullmatch(text)
    if match is None:
        if text.startswith("-"):
            raise MoneyError(f"must not be negative, got {value!r}")
        raise MoneyError(f"expected a decimal with at most 6 places, got {value!r}")
    whole, fraction = match.groups()
    whole = whole.lstrip("0") or "0"
    if len(whole) > _MAX_WHOLE_DIGITS:  # before int(), which refuses (or crawls through) huge strings
        raise MoneyError(f"more than {MAX_MICROS // MICROS} per CDR, got a number of {len(whole)} digits")
    return _capped(int(whole) * MICROS + (int(fraction.ljust(6, "0")) if fraction else 0), value)


def _capped(micros: int, given: object) -> int:
    if micros > MAX_MICROS:
        raise MoneyError(f"more than {MAX_MICROS // MICROS} per CDR, got {given!r}")
    return micros


def _plain(text: str) -> str:
    """Exponent notation (``1e-07``) as plain decimal text, for the same checks as strings."""
    try:
        return format(Decimal(text), "f")
    except InvalidOperation:  # pragma: no cover - repr() of a finite float always parses
        return text


def format_micros(micros: int) -> str:
    """Micro-units as a decimal string with six places: ``1234567`` → ``"1.234567"``."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{fraction:06d}"
