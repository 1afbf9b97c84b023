"""Exact money: parse_micros and format_micros."""

from __future__ import annotations

import pytest

from breakout.money import MICROS, MoneyError, format_micros, parse_micros


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1.5", 1_500_000),
        ("0.000001", 1),
        ("0", 0),
        ("0.0", 0),
        ("12.345678", 12_345_678),
        ("007.25", 7_250_000),
        (" 1.5 ", 1_500_000),  # surrounding whitespace is stripped on purpose
        (2, 2_000_000),
        (0, 0),
        (0.1, 100_000),
        (1.5, 1_500_000),
        (0.000001, 1),  # repr is "1e-06": read through plain decimal text
        (1e6, 1_000_000 * MICROS),  # the per-CDR cap itself
        (123.456789, 123_456_789),
    ],
)
def test_parse_micros(value: object, expected: int) -> None:
    assert parse_micros(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (1e-7, "at most 6 places"),
        ("0.1234567", "at most 6 places"),  # seven places: rejected, never rounded
        (0.1234567, "at most 6 places"),
        ("-1", "must not be negative"),
        (-1, "must not be negative"),
        (-0.5, "must not be negative"),
        (True, "expected a decimal"),
        (False, "expected a decimal"),
        (float("nan"), "must be finite"),
        (float("inf"), "must be finite"),
        (float("-inf"), "must be finite"),
        ("abc", "at most 6 places"),
        ("", "at most 6 places"),
        ("1.", "at most 6 places"),
        (".5", "at most 6 places"),
        ("+1", "at most 6 places"),
        ("1e3", "at most 6 places"),
        ("1,5", "at most 6 places"),
        (None, "got NoneType"),
        ([1], "got list"),
    ],
)
def test_parse_micros_rejects(value: object, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_micros(value)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize("value", ["\u0661.\u0665", "\uff11\uff12", "1.\u0665"])
def test_parse_micros_rejects_non_ascii_digits(value: str) -> None:
    with pytest.raises(MoneyError):
        parse_micros(value)


@pytest.mark.parametrize(
    "micros, expected",
    [
        (1_234_567, "1.234567"),
        (-5, "-0.000005"),
        (0, "0.000000"),
        (1, "0.000001"),
        (1_000_000, "1.000000"),
        (-1_500_000, "-1.500000"),
        (123_456_789_012, "123456.789012"),
    ],
)
def test_format_micros(micros: int, expected: str) -> None:
    assert format_micros(micros) == expected


@pytest.mark.parametrize("text", ["0.000000", "1.234567", "98765.4321", "3"])
def test_format_parse_round_trip(text: str) -> None:
    assert parse_micros(format_micros(parse_micros(text))) == parse_micros(text)
