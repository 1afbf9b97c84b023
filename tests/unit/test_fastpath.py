"""The fast path agrees with the full validator: same values when it accepts, defers otherwise."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from breakout.cdr import EARLIEST_MS, FUTURE_SLACK_MS, MAX_TEXT, validate_cdr
from breakout.errors import InvalidCDR
from breakout.fastpath import common_cdr
from breakout.normalize import _fields
from tests.unit.test_cdr import BASE, NOW_MS, REMOVE, cdr


def full(document: Any) -> Any:
    """What validate_cdr makes of ``document``: its fields, or the refusal reason."""
    try:
        return _fields(validate_cdr(document, default_currency="USD", now_ms=NOW_MS))
    except InvalidCDR as exc:
        return exc.reason


def fast(document: Any) -> Any:
    return common_cdr(document, default_currency="USD", now_ms=NOW_MS)


def assert_agrees(document: Any) -> None:
    got = fast(document)
    if got is not None:  # None defers to validate_cdr, which is always allowed
        assert got == full(document), document
        assert [type(v) for v in got] == [type(v) for v in full(document)], document


# Values per field the fast path must get exactly right, or leave to the full validator.
TRICKY: dict[str, list[Any]] = {
    "id": ["a", "", " ", "\u2003", "x" * MAX_TEXT, "x" * (MAX_TEXT + 1), 5, None, REMOVE, ["a"]],
    "customer_id": ["c|1", "", "  c ", True, None, REMOVE, "\u00e9"],
    "provider_id": ["", "p", None, REMOVE, 0, False, "p" * (MAX_TEXT + 1)],
    "destination": ["", " ", " UK ", "UK", None, REMOVE, 44, "d" * (MAX_TEXT + 1)],
    "dst": [
        "+44",
        "0044",
        "44",
        " 44",
        "+",
        "00",
        "+0044",
        "00+44",
        "++44",
        "4-4",
        "\u0664\u0664",
        "\u00b2",
        "1" * 32,
        "1" * 33,
        "+" + "1" * 32,
        "",
        44,
        None,
        REMOVE,
    ],
    "start_time": [
        "2026-11-25T09:00:00Z",
        "2026-11-25T10:00:00+01:00",
        "2026-11-25T09:00:00.1234Z",
        "2026-11-25T09:00:00",
        "2026-11-25",
        "nope",
        "1764064800",
        " 2026-11-25T09:00:00Z",
        1_764_064_800,
        1_764_064_800.5,
        1_764_064_800.0005,
        1_764_064_800_123,
        1_764_064_800_123.7,
        99_999_999_999,
        99_999_999_999.9,
        100_000_000_000,
        EARLIEST_MS,
        EARLIEST_MS - 1,
        946_684_800,
        946_684_799.9996,
        946_684_799.9994,
        NOW_MS + FUTURE_SLACK_MS,
        NOW_MS + FUTURE_SLACK_MS + 1,
        (NOW_MS + FUTURE_SLACK_MS) / 1000,
        (NOW_MS + FUTURE_SLACK_MS) / 1000 + 0.0005,
        0,
        -1,
        1e300,
        -1e300,
        1e308,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        REMOVE,
        [1],
    ],
    "answer_time": ["2026-11-25T09:00:05Z", "2026-11-25T09:00:05", 0, 1_764_064_800, None, REMOVE, "x"],
    "end_time": [1_764_064_865_000, float("nan"), True, None, REMOVE],
    "duration": [
        0,
        1,
        604_800,
        604_801,
        -1,
        0.0,
        -0.0,
        0.001,
        0.0005,
        0.0015,
        1.1,
        12.5,
        59.999,
        1.2345,
        0.1 + 0.2,
        1234.567,
        604_799.999,
        604_800.0,
        604_800.001,
        86399.999,
        999.9995,
        float("nan"),
        float("inf"),
        "12",
        True,
        False,
        None,
        REMOVE,
    ],
    "status": [
        "answered",
        "ANSWERED",
        " Answered ",
        "busy",
        " No_Answer ",
        "failed",
        "",
        "   ",
        200,
        False,
        None,
        REMOVE,
    ],
    "provider_charge": [
        "0",
        "0.0",
        "1.",
        ".5",
        "01.5",
        "1.123456",
        "1.1234567",
        "1000000",
        "1000000.000001",
        "9999999",
        "00000001",
        " 1",
        "1 ",
        "-1",
        "+1",
        "1_0",
        "1e3",
        "\u0661",
        "1.\u0661",
        "1.2.3",
        "",
        0,
        1,
        -1,
        1.5,
        1e-07,
        True,
        None,
        REMOVE,
    ],
    "customer_charge": ["0.02", "0", None, REMOVE, 0, 2.5, "abc", "1.1234567", " 0.02"],
    "currency": ["EUR", "eur", "Gbp", "EURO", "E1R", "", "\u00e9ur", 978, None, REMOVE],
    "dtmf": [0, 3, 1_000_000, 1_000_001, -1, 1.5, "2", True, None, REMOVE],
    "revision": [0, 5, 2**31 - 1, 2**31, -1, 1.0, "1", True, None, REMOVE],
    "sip_code": [200, 202, 486, 487, 503, 100, 699, 99, 700, "503", 503.0, True, None, REMOVE],
    "q850_cause": [16, 17, 34, 0, 127, -1, 128, "17", 17.0, False, None, REMOVE],
    "pdd_ms": [0, 2_500, 600_000, 600_001, -1, 2.5, "2500", True, None, REMOVE],
}


DEEP: Any = orjson.loads(b"[" * 1000 + b"]" * 1000)  # deeper than Python's own repr can go


@pytest.mark.parametrize(
    "field, value", [(field, value) for field, values in TRICKY.items() for value in values]
)
def test_agrees_on_each_tricky_value(field: str, value: Any) -> None:
    assert_agrees(cdr(**{field: value}))


@pytest.mark.parametrize("field", list(TRICKY))
@pytest.mark.parametrize(
    "value",
    [DEEP, {"a": DEEP}, "9" * 800_000, "\x01" * 800_000],
    ids=["deep", "deep-object", "digits", "ctl"],
)
def test_agrees_on_huge_and_deeply_nested_values(field: str, value: Any) -> None:
    """Neither validator may fail on such a value other than by refusing it with a reason."""
    document = cdr(**{field: value})
    assert_agrees(document)
    assert full(document) is not None


def test_accepts_the_common_shapes() -> None:
    """The point of the fast path: the shapes producers send go through it, not around it."""
    for changes in (
        {},
        {"start_time": 1_764_064_800.5, "duration": 12.5, "currency": "usd"},
        {"customer_charge": None, "status": REMOVE, "dtmf": REMOVE, "currency": REMOVE},
        {"destination": "UK Mobile", "answer_time": "2026-11-25T09:00:05Z", "end_time": 1_764_064_865},
        {"revision": 3, "customer_charge": None},
        {"revision": None},
        {"sip_code": 503, "q850_cause": 34, "pdd_ms": 2_500, "status": "failed"},
    ):
        assert fast(cdr(**changes)) is not None, changes


@pytest.mark.parametrize("document", [[BASE], 5, "cdr", None, [], 1.5, True, {}])
def test_defers_non_objects_and_empty(document: Any) -> None:
    assert fast(document) is None


def test_agrees_on_random_mixtures() -> None:
    """Several tricky values at once: the fast path must still accept only what the full one does."""
    rng = random.Random(7)
    fields = list(TRICKY)
    for _ in range(5_000):
        changes = {field: rng.choice(TRICKY[field]) for field in rng.sample(fields, rng.randint(1, 4))}
        assert_agrees(cdr(**changes))


def test_agrees_on_random_durations_and_money() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        duration = round(rng.uniform(0, 604_800), rng.randint(0, 5))
        money = f"{rng.randrange(10 ** rng.randint(1, 8))}.{rng.randrange(10**7):0{rng.randint(1, 7)}d}"
        assert_agrees(cdr(duration=duration, provider_charge=money, start_time=rng.uniform(9.4e8, 1.8e12)))
