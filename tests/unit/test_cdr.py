"""The CDR contract: decode_message and validate_cdr, one row per rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest

from breakout.cdr import CDR, EARLIEST_MS, FUTURE_SLACK_MS, MAX_TEXT, decode_message, validate_cdr
from breakout.errors import BreakoutError, InvalidCDR

REMOVE: Any = object()  # a value for cdr(**changes) meaning "drop this key"

START_TEXT = "2026-11-25T10:00:00+01:00"
START_MS = 1_795_597_200_000  # 2026-11-25T09:00:00Z
NOW_MS = START_MS + 3_600_000
DEFAULT_CURRENCY = "USD"

BASE: dict[str, Any] = {
    "id": "cdr-1",
    "customer_id": "cust-1",
    "provider_id": "prov-1",
    "dst": "+447700900123",
    "start_time": START_TEXT,
    "duration": 60,
    "status": "ANSWERED",
    "provider_charge": "0.012",
    "customer_charge": "0.02",
    "currency": "EUR",
    "dtmf": 0,
}

EXPECTED_BASE = CDR(
    id="cdr-1",
    customer_id="cust-1",
    provider_id="prov-1",
    dst="447700900123",
    destination=None,
    start_ms=START_MS,
    duration_ms=60_000,
    connected=True,
    provider_charge=12_000,
    customer_charge=20_000,
    currency="EUR",
    dtmf=0,
    revision=0,
    effective=True,
)


def cdr(**changes: Any) -> dict[str, Any]:
    """A valid CDR document with ``changes`` applied; a value of ``REMOVE`` drops the key."""
    document = dict(BASE)
    for key, value in changes.items():
        if value is REMOVE:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def validate(document: Any, now_ms: int = NOW_MS) -> CDR:
    return validate_cdr(document, default_currency=DEFAULT_CURRENCY, now_ms=now_ms)


def test_start_ms_constant_matches_datetime() -> None:
    assert datetime.fromisoformat(START_TEXT).timestamp() * 1000 == START_MS


# --- decode_message -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (b'{"id": "a"}', [{"id": "a"}]),
        (b'  {"id": "a", "n": 1}  ', [{"id": "a", "n": 1}]),
        (b'[{"id": "a"}, {"id": "b"}]', [{"id": "a"}, {"id": "b"}]),
        (b'[{"id": "a"}]', [{"id": "a"}]),
        (b'[{"id": "a"}, 5, "x"]', [{"id": "a"}, 5, "x"]),  # elements are judged one by one later
    ],
)
def test_decode_message(value: bytes, expected: list[Any]) -> None:
    assert decode_message(value) == expected


@pytest.mark.parametrize(
    "value, detail",
    [
        (b"not json", "not JSON"),
        (b"NaN", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b"", "not JSON"),
        (b'{"a": 1', "not JSON"),
        (b"[]", "empty batch"),
        (b"3", "got int"),
        (b'"text"', "got str"),
        (b"null", "got NoneType"),
        (b"true", "got bool"),
        (None, "no value"),
    ],
)
def test_decode_message_bad_json(value: bytes | None, detail: str) -> None:
    with pytest.raises(InvalidCDR) as info:
        decode_message(value)
    assert info.value.reason == "bad_json"
    assert detail in info.value.detail


def test_invalid_cdr_carries_reason_and_detail() -> None:
    error = InvalidCDR("bad_field", "dst: nope")
    assert isinstance(error, BreakoutError)
    assert (error.reason, error.detail, str(error)) == ("bad_field", "dst: nope", "bad_field: dst: nope")


# --- validate_cdr: the valid base and accepted variations -----------------------------


def test_valid_base_cdr() -> None:
    assert validate(cdr()) == EXPECTED_BASE


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        # pending rating: the key is there, its value is null
        ({"customer_charge": None}, "customer_charge", None),
        ({"customer_charge": 0}, "customer_charge", 0),
        ({"provider_charge": 1.5}, "provider_charge", 1_500_000),
        ({"provider_charge": 2}, "provider_charge", 2_000_000),
        # dst normalization
        ({"dst": "+447700900123"}, "dst", "447700900123"),
        ({"dst": "00447700900123"}, "dst", "447700900123"),
        ({"dst": "447700900123"}, "dst", "447700900123"),
        ({"dst": " +447700900123 "}, "dst", "447700900123"),
        ({"dst": "1" * 32}, "dst", "1" * 32),
        # start_time
        ({"start_time": "2026-11-25T10:00:00+01:00"}, "start_ms", 1_795_597_200_000),
        ({"start_time": "2026-11-25T09:00:00Z"}, "start_ms", 1_795_597_200_000),
        ({"start_time": "2026-11-25T09:00:00+00:00"}, "start_ms", 1_795_597_200_000),
        ({"start_time": "2026-11-25T09:00:00.123Z"}, "start_ms", 1_795_597_200_123),
        ({"start_time": 1_764_064_800}, "start_ms", 1_764_064_800_000),  # epoch seconds
        ({"start_time": 1_764_064_800.5}, "start_ms", 1_764_064_800_500),  # fractional seconds
        ({"start_time": 1_764_064_800_123}, "start_ms", 1_764_064_800_123),  # epoch milliseconds
        ({"start_time": EARLIEST_MS}, "start_ms", EARLIEST_MS),  # 2000-01-01T00:00:00Z exactly
        ({"start_time": "2000-01-01T00:00:00Z"}, "start_ms", EARLIEST_MS),
        ({"start_time": NOW_MS + FUTURE_SLACK_MS}, "start_ms", NOW_MS + FUTURE_SLACK_MS),
        # optional answer/end times are checked but not kept
        ({"answer_time": "2026-11-25T09:00:05Z", "end_time": START_MS + 65_000}, "start_ms", START_MS),
        # duration
        ({"duration": 12.5}, "duration_ms", 12_500),
        ({"duration": 0}, "duration_ms", 0),
        ({"duration": 0.001}, "duration_ms", 1),
        ({"duration": 1.234}, "duration_ms", 1_234),
        ({"duration": 59.999}, "duration_ms", 59_999),
        ({"duration": 3600}, "duration_ms", 3_600_000),
        ({"duration": 1234.567}, "duration_ms", 1_234_567),
        ({"duration": 86399.999}, "duration_ms", 86_399_999),
        # status decides connected; without status a positive duration does
        ({"status": "ANSWERED"}, "connected", True),
        ({"status": "answered"}, "connected", True),
        ({"status": " Answered "}, "connected", True),
        ({"status": "busy", "duration": 30}, "connected", False),
        ({"status": "NO ANSWER", "duration": 0}, "connected", False),
        ({"status": REMOVE, "duration": 30}, "connected", True),
        ({"status": None, "duration": 0.001}, "connected", True),
        ({"status": REMOVE, "duration": 0}, "connected", False),
        # currency
        ({"currency": "eur"}, "currency", "EUR"),
        ({"currency": "Gbp"}, "currency", "GBP"),
        ({"currency": REMOVE}, "currency", DEFAULT_CURRENCY),
        ({"currency": None}, "currency", DEFAULT_CURRENCY),
        # dtmf
        ({"dtmf": REMOVE}, "dtmf", 0),
        ({"dtmf": None}, "dtmf", 0),
        ({"dtmf": 3}, "dtmf", 3),
        # revision
        ({"revision": REMOVE}, "revision", 0),
        ({"revision": None}, "revision", 0),
        ({"revision": 0}, "revision", 0),
        ({"revision": 5}, "revision", 5),
        ({"revision": 2**31 - 1}, "revision", 2**31 - 1),
        # destination: the platform's own name, or None to resolve by dial code
        ({"destination": ""}, "destination", None),
        ({"destination": REMOVE}, "destination", None),
        ({"destination": "UK Mobile Premium"}, "destination", "UK Mobile Premium"),
        # optional provider
        ({"provider_id": REMOVE}, "provider_id", ""),
        # text limits
        ({"id": "x" * MAX_TEXT}, "id", "x" * MAX_TEXT),
        ({"customer_id": "a|b"}, "customer_id", "a|b"),
    ],
)
def test_validate_field(changes: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(validate(cdr(**changes)), field) == expected


def test_unknown_extra_fields_are_ignored() -> None:
    document = cdr(codec="G.711", hangup_cause=16, nested={"a": [1, 2]})
    assert validate(document) == EXPECTED_BASE


def test_pending_cdr_is_valid() -> None:
    assert validate(cdr(customer_charge=None)) == replace(EXPECTED_BASE, customer_charge=None)


# --- validate_cdr: every rule that rejects ---------------------------------------------


@pytest.mark.parametrize(
    "changes, reason",
    [
        # required fields
        ({"id": REMOVE}, "missing_field"),
        ({"id": None}, "missing_field"),
        ({"customer_id": REMOVE}, "missing_field"),
        ({"dst": REMOVE}, "missing_field"),
        ({"dst": None}, "missing_field"),
        ({"start_time": REMOVE}, "missing_field"),
        ({"duration": REMOVE}, "missing_field"),
        ({"duration": None}, "missing_field"),
        ({"provider_charge": REMOVE}, "missing_field"),
        ({"provider_charge": None}, "missing_field"),
        ({"customer_charge": REMOVE}, "missing_field"),  # absent is not pending
        # text fields
        ({"id": "x" * (MAX_TEXT + 1)}, "bad_field"),
        ({"id": ""}, "bad_field"),
        ({"id": "   "}, "bad_field"),
        ({"id": 17}, "bad_field"),
        ({"customer_id": ["c"]}, "bad_field"),
        ({"provider_id": 5}, "bad_field"),
        ({"destination": 44}, "bad_field"),
        ({"destination": "d" * (MAX_TEXT + 1)}, "bad_field"),
        # dst
        ({"dst": "+44 77"}, "bad_field"),
        ({"dst": "abc"}, "bad_field"),
        ({"dst": 12345}, "bad_field"),
        ({"dst": ""}, "bad_field"),
        ({"dst": "+"}, "bad_field"),
        ({"dst": "00"}, "bad_field"),
        ({"dst": "++44"}, "bad_field"),
        ({"dst": "+44-20"}, "bad_field"),
        ({"dst": "\u0664\u0664"}, "bad_field"),  # Arabic-Indic digits
        ({"dst": "1" * 33}, "bad_field"),
        # start_time
        ({"start_time": "2026-11-25T09:00:00"}, "bad_time"),  # naive ISO
        ({"start_time": "2026-11-25"}, "bad_time"),
        ({"start_time": "yesterday"}, "bad_time"),
        ({"start_time": "1764064800"}, "bad_time"),  # epoch as a string
        ({"start_time": "1999-12-31T23:59:59Z"}, "bad_time"),
        ({"start_time": EARLIEST_MS - 1}, "bad_time"),
        ({"start_time": 946_684_799}, "bad_time"),  # epoch seconds, one second before 2000
        ({"start_time": 0}, "bad_time"),
        ({"start_time": -1}, "bad_time"),
        ({"start_time": NOW_MS + FUTURE_SLACK_MS + 1}, "bad_time"),
        ({"start_time": (NOW_MS + FUTURE_SLACK_MS) // 1000 + 1}, "bad_time"),
        ({"start_time": True}, "bad_time"),
        ({"start_time": False}, "bad_time"),
        ({"start_time": float("nan")}, "bad_time"),
        ({"start_time": float("inf")}, "bad_time"),
        ({"start_time": [2026, 11, 25]}, "bad_time"),
        ({"answer_time": "2026-11-25T09:00:05"}, "bad_time"),
        ({"end_time": "later"}, "bad_time"),
        # duration
        ({"duration": -1}, "bad_field"),
        ({"duration": -0.001}, "bad_field"),
        ({"duration": 1.2345}, "bad_field"),
        ({"duration": 0.0001}, "bad_field"),
        ({"duration": "12"}, "bad_field"),
        ({"duration": True}, "bad_field"),
        ({"duration": float("nan")}, "bad_field"),
        ({"duration": float("inf")}, "bad_field"),
        # status
        ({"status": ""}, "bad_field"),
        ({"status": "   "}, "bad_field"),
        ({"status": 200}, "bad_field"),
        ({"status": False}, "bad_field"),
        # money
        ({"provider_charge": "-1"}, "bad_money"),
        ({"provider_charge": "0.1234567"}, "bad_money"),
        ({"customer_charge": -1}, "bad_money"),
        ({"customer_charge": "abc"}, "bad_money"),
        ({"customer_charge": True}, "bad_money"),
        # currency
        ({"currency": "EURO"}, "bad_field"),
        ({"currency": "E1R"}, "bad_field"),
        ({"currency": ""}, "bad_field"),
        ({"currency": 978}, "bad_field"),
        ({"currency": "\u00e9ur"}, "bad_field"),
        # dtmf
        ({"dtmf": -1}, "bad_field"),
        ({"dtmf": 1.5}, "bad_field"),
        ({"dtmf": "2"}, "bad_field"),
        ({"dtmf": True}, "bad_field"),
        # revision
        ({"revision": 2**31}, "bad_field"),
        ({"revision": -1}, "bad_field"),
        ({"revision": 1.0}, "bad_field"),
        ({"revision": "1"}, "bad_field"),
        ({"revision": True}, "bad_field"),
    ],
)
def test_validate_rejects(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidCDR) as info:
        validate(cdr(**changes))
    assert info.value.reason == reason


@pytest.mark.parametrize("document", [[BASE], 5, "cdr", None, [], 1.5, True])
def test_validate_rejects_non_object(document: Any) -> None:
    with pytest.raises(InvalidCDR) as info:
        validate(document)
    assert info.value.reason == "not_an_object"


@pytest.mark.parametrize(
    "changes, detail",
    [
        ({"customer_charge": REMOVE}, "customer_charge is required (null means rating pending)"),
        ({"id": REMOVE}, "id is required"),
        ({"dst": "+44 77"}, "dst: expected up to 32 digits, got '+44 77'"),
        ({"start_time": "2026-11-25T09:00:00"}, "needs a UTC offset"),
        ({"start_time": NOW_MS + FUTURE_SLACK_MS + 1}, "more than a day in the future"),
        ({"start_time": "1999-12-31T23:59:59Z"}, "before 2000-01-01"),
        ({"duration": 1.2345}, "at most 3 decimal places"),
        ({"provider_charge": "-1"}, "provider_charge: must not be negative"),
        ({"revision": 2**31}, "revision: expected a whole number from 0 to 2147483647, got 2147483648"),
        ({"revision": -1}, "revision: expected a whole number from 0 to 2147483647, got -1"),
        ({"revision": 1.0}, "revision: expected a whole number from 0 to 2147483647, got 1.0"),
        ({"revision": "1"}, "revision: expected a whole number from 0 to 2147483647, got '1'"),
        ({"revision": True}, "revision: expected a whole number from 0 to 2147483647, got True"),
    ],
)
def test_reject_detail_names_the_problem(changes: dict[str, Any], detail: str) -> None:
    with pytest.raises(InvalidCDR) as info:
        validate(cdr(**changes))
    assert detail in info.value.detail


@pytest.mark.parametrize("duration", [1234.5678, 1000.0004, 3600.0001, 999.9995])
def test_duration_with_four_decimals_is_rejected_at_any_size(duration: float) -> None:
    with pytest.raises(InvalidCDR) as info:
        validate(cdr(duration=duration))
    assert info.value.reason == "bad_field"


DEEP: Any = orjson.loads(b"[" * 1000 + b"]" * 1000)  # deeper than Python's own repr can go
QUOTING_FIELDS = [
    "dst",
    "start_time",
    "answer_time",
    "end_time",
    "duration",
    "status",
    "currency",
    "dtmf",
    "revision",
]


@pytest.mark.parametrize(
    "field, value",
    [(field, DEEP) for field in QUOTING_FIELDS]
    + [(field, "\x01" * 800_000) for field in QUOTING_FIELDS if field != "status"],
)
def test_detail_quotes_a_huge_or_deeply_nested_value_briefly(field: str, value: Any) -> None:
    """A detail names the problem; it neither copies the value whole nor fails on its depth."""
    with pytest.raises(InvalidCDR) as info:
        validate(cdr(**{field: value}))
    assert info.value.detail.startswith(field) and len(info.value.detail) < 200


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),  # answered
        ({"status": "failed"}, False),
        ({"status": "Busy"}, True),  # ended by the callee
        ({"status": "no_answer"}, True),
        ({"status": "cancelled"}, True),
        ({"status": "rejected"}, True),
        ({"status": "congestion"}, False),
        ({"status": REMOVE}, True),  # duration > 0: connected
        ({"status": REMOVE, "duration": 0}, False),
        # the SIP code decides over the status, the Q.850 cause over the status too
        ({"status": "answered", "sip_code": 503}, False),
        ({"status": "failed", "sip_code": 486}, True),
        ({"sip_code": 200}, True),
        ({"sip_code": 202}, True),
        ({"sip_code": 480}, True),
        ({"sip_code": 487}, True),
        ({"sip_code": 600}, True),
        ({"sip_code": 603}, True),
        ({"sip_code": 404}, False),
        ({"sip_code": 408}, False),
        ({"status": "failed", "q850_cause": 17}, True),
        ({"status": "answered", "q850_cause": 34}, False),
        ({"sip_code": 503, "q850_cause": 17}, False),
    ],
)
def test_effective_follows_e425(changes: dict[str, Any], expected: bool) -> None:
    assert validate(cdr(**changes)).effective is expected


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"sip_code": 100}, "sip_code", 100),
        ({"sip_code": 699}, "sip_code", 699),
        ({"q850_cause": 0}, "q850_cause", 0),
        ({"q850_cause": 127}, "q850_cause", 127),
        ({"pdd_ms": 0}, "pdd_ms", 0),
        ({"pdd_ms": 600_000}, "pdd_ms", 600_000),
        ({"sip_code": None, "pdd_ms": None}, "pdd_ms", None),  # null: unknown, never guessed
        ({}, "sip_code", None),
    ],
)
def test_noc_fields_are_carried(changes: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(validate(cdr(**changes)), field) == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("sip_code", 99),
        ("sip_code", 700),
        ("sip_code", "503"),
        ("sip_code", 503.0),
        ("sip_code", True),
        ("q850_cause", -1),
        ("q850_cause", 128),
        ("q850_cause", "17"),
        ("pdd_ms", -1),
        ("pdd_ms", 600_001),
        ("pdd_ms", 2.5),
        ("pdd_ms", [1]),
    ],
)
def test_bad_noc_fields_are_refused_with_a_reason(field: str, value: Any) -> None:
    with pytest.raises(InvalidCDR) as refused:
        validate(cdr(**{field: value}))
    assert refused.value.reason == "bad_field" and refused.value.detail.startswith(f"{field}: ")
