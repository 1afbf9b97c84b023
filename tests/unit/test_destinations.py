"""Dial-code tables: longest-prefix lookup, CSV parsing, loading, resolution."""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

import pytest

from breakout.destinations import UNKNOWN, DialCodes, load_dial_codes, resolve
from breakout.errors import ConfigError

TABLE = {"44": "UK", "447": "UK - Mobile", "1": "US"}
ORDERS = {
    "short_first": dict(TABLE),
    "long_first": dict(reversed(list(TABLE.items()))),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize(
    "number, expected",
    [
        ("447700900123", "UK - Mobile"),
        ("442079460000", "UK"),
        ("447", "UK - Mobile"),
        ("44", "UK"),
        ("12125550100", "US"),
        ("1", "US"),
        ("999", UNKNOWN),
        ("", UNKNOWN),
        ("4", UNKNOWN),
        ("3447", UNKNOWN),  # a prefix matches at the start only
    ],
)
def test_lookup_longest_prefix_wins(order: str, number: str, expected: str) -> None:
    assert DialCodes(ORDERS[order]).lookup(number) == expected


def test_unknown_is_the_literal_name() -> None:
    assert UNKNOWN == "Unknown"


@pytest.mark.parametrize(
    "table, number, expected",
    [
        ({}, "447700900123", UNKNOWN),
        ({"4477009": "Deep"}, "447700900123", "Deep"),
        ({"4477009": "Deep", "44": "UK"}, "4477008", "UK"),
        ({"447700900123": "Exact"}, "447700900123", "Exact"),
        ({"447700900123": "Exact"}, "44770090012", UNKNOWN),  # number shorter than the prefix
    ],
)
def test_lookup_edges(table: dict[str, str], number: str, expected: str) -> None:
    assert DialCodes(table).lookup(number) == expected


def test_lookup_matches_brute_force_on_the_shipped_table() -> None:
    """The lookup starts below the table's longest code; it must still find the longest match."""
    dial_codes = load_dial_codes(None)
    table = dict(dial_codes._table)
    rng = random.Random(3)
    prefixes = sorted(table)
    for _ in range(5_000):
        number = rng.choice(prefixes)[: rng.randint(1, 9)] + "".join(
            rng.choices("0123456789", k=rng.randint(0, 9))
        )
        matches = [number[:n] for n in range(len(number), 0, -1) if number[:n] in table]
        expected = table[matches[0]] if matches else UNKNOWN
        assert dial_codes.lookup(number) == expected, number


@pytest.mark.parametrize(
    "given, dst, expected",
    [
        ("Platform Name", "447700900123", "Platform Name"),
        ("Platform Name", "999", "Platform Name"),
        (None, "447700900123", "UK - Mobile"),
        ("", "447700900123", "UK - Mobile"),
        (None, "999", UNKNOWN),
    ],
)
def test_resolve(given: str | None, dst: str, expected: str) -> None:
    assert resolve(given, dst, DialCodes(TABLE)) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prefix,destination\n44,UK\n447,UK - Mobile\n", {"44": "UK", "447": "UK - Mobile"}),
        ("44,UK\n447,UK - Mobile\n", {"44": "UK", "447": "UK - Mobile"}),  # header optional
        ("Prefix,Destination\n1,US", {"1": "US"}),
        (" 44 , UK \n", {"44": "UK"}),  # cells are stripped
        ("44,UK\n\n1,US\n\n", {"44": "UK", "1": "US"}),  # blank lines are skipped
        ('44,"Name, with comma"\n', {"44": "Name, with comma"}),  # CSV quoting
    ],
)
def test_from_csv_text(text: str, expected: dict[str, str]) -> None:
    codes = DialCodes.from_csv_text(text, "test.csv")
    assert len(codes) == len(expected)
    assert {prefix: codes.lookup(prefix) for prefix in expected} == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("prefix,destination\n44,UK\n4a,Bad\n", "test.csv:3: expected 'prefix,destination'"),
        ("44,UK\n+44,Bad\n", "test.csv:2: expected 'prefix,destination'"),
        ("44,UK\n447,\n", "test.csv:2: expected 'prefix,destination'"),  # missing name
        ("44,UK\n447\n", "test.csv:2: expected 'prefix,destination'"),  # one column
        ("44,UK,extra\n", "test.csv:1: expected 'prefix,destination'"),  # three columns
        (",UK\n", "test.csv:1: expected 'prefix,destination'"),
        ("44,UK\nprefix,destination\n", "test.csv:2: expected 'prefix,destination'"),  # header only first
        ("", "test.csv: no dial codes"),
        ("prefix,destination\n", "test.csv: no dial codes"),
        ("\n\n", "test.csv: no dial codes"),
    ],
)
def test_from_csv_text_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DialCodes.from_csv_text(text, "test.csv")
    assert str(info.value).startswith(message)


def test_from_csv_text_error_shows_the_row() -> None:
    with pytest.raises(ConfigError, match=r"test\.csv:2: .*\['4a', 'Bad'\]"):
        DialCodes.from_csv_text("44,UK\n4a,Bad\n", "test.csv")


SHIPPED = Path(str(resources.files("breakout.data").joinpath("dial_codes.csv")))


@pytest.mark.parametrize(
    "number, expected",
    [
        ("447400123456", "United Kingdom - Mobile"),
        ("442079460000", "United Kingdom"),
        ("493012345678", "Germany"),
    ],
)
def test_load_shipped_table(number: str, expected: str) -> None:
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} has not been generated yet")
    assert load_dial_codes(None).lookup(number) == expected


def test_load_shipped_table_ofcom_test_number() -> None:
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} has not been generated yet")
    assert load_dial_codes(None).lookup("447700900123") == "United Kingdom - Mobile"


def test_load_dial_codes_from_path(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("prefix,destination\n44,UK\n447,UK - Mobile\n", encoding="utf-8")
    assert load_dial_codes(path).lookup("447700900123") == "UK - Mobile"


def test_load_dial_codes_bad_row_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("44,UK\nx,Y\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^BREAKOUT_DIAL_CODES={path}:2: "):
        load_dial_codes(path)


def test_load_dial_codes_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_dial_codes(Path("/nonexistent"))
    assert str(info.value) == "BREAKOUT_DIAL_CODES=/nonexistent: No such file or directory"
