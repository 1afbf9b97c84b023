"""The ingest step: one raw message in, records and rejects out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from breakout.destinations import DialCodes
from breakout.normalize import Record, Reject, normalize_message

START_MS = 1_795_597_200_000  # 2026-11-25T09:00:00Z
NOW_MS = START_MS + 3_600_000
DIAL_CODES = DialCodes({"44": "UK", "447": "UK - Mobile", "1": "US"})


def doc(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "cdr-1",
        "customer_id": "cust-1",
        "provider_id": "prov-1",
        "dst": "+447700900123",
        "start_time": "2026-11-25T09:00:00Z",
        "duration": 60,
        "status": "ANSWERED",
        "provider_charge": "0.012",
        "customer_charge": "0.02",
        "currency": "EUR",
    }
    document.update(changes)
    return document


def record(**changes: Any) -> Record:
    base = Record(
        id="cdr-1",
        customer_id="cust-1",
        provider_id="prov-1",
        destination="UK - Mobile",
        currency="EUR",
        start_ms=START_MS,
        connected=True,
        duration_ms=60_000,
        provider_charge=12_000,
        customer_charge=20_000,
        dtmf=0,
    )
    return base._replace(**changes)


def normalize(value: bytes | None, too_late_before_ms: int = 0) -> tuple[list[Record], list[Reject]]:
    return normalize_message(
        value,
        dial_codes=DIAL_CODES,
        default_currency="USD",
        now_ms=NOW_MS,
        too_late_before_ms=too_late_before_ms,
    )


@pytest.mark.parametrize(
    "documents, expected",
    [
        (doc(), [record()]),
        ([doc()], [record()]),
        ([doc(id="a"), doc(id="b")], [record(id="a"), record(id="b")]),
        # destination: dial codes, or the platform's own name
        (doc(dst="442079460000"), [record(destination="UK")]),
        (doc(dst="0012125550100"), [record(destination="US")]),
        (doc(dst="999"), [record(destination="Unknown")]),
        (doc(destination="Premium UK"), [record(destination="Premium UK")]),
        (doc(destination=""), [record(destination="UK - Mobile")]),
        # the rest of the record comes from the validated CDR
        (doc(currency=None), [record(currency="USD")]),
        (doc(customer_charge=None), [record(customer_charge=None)]),
        (doc(status="busy", duration=0), [record(connected=False, duration_ms=0)]),
        (doc(dtmf=2, provider_id=None), [record(dtmf=2, provider_id="")]),
    ],
)
def test_valid_messages(documents: Any, expected: list[Record]) -> None:
    assert normalize(orjson.dumps(documents)) == (expected, [])


def test_batch_keeps_valid_siblings_of_a_bad_cdr() -> None:
    bad = doc(id="bad", dst="not a number", extra={"kept": [1, 2.5, None]})
    value = orjson.dumps([doc(id="a"), bad, doc(id="c")])
    records, rejects = normalize(value)
    assert records == [record(id="a"), record(id="c")]
    assert rejects == [
        Reject("bad_field", "dst: expected up to 32 digits, got 'not a number'", orjson.dumps(bad), 1)
    ]


@pytest.mark.parametrize(
    "elements, reasons",
    [
        ([doc(id="a"), 5], [("not_an_object", 1, b"5")]),
        ([[doc()]], [("not_an_object", 0, orjson.dumps([doc()]))]),
        ([doc(duration=-1)], [("bad_field", 0, orjson.dumps(doc(duration=-1)))]),  # a batch of one
        (
            [doc(id=None), doc(id="ok"), doc(start_time="2026-11-25T09:00:00")],
            [
                ("missing_field", 0, orjson.dumps(doc(id=None))),
                ("bad_time", 2, orjson.dumps(doc(start_time="2026-11-25T09:00:00"))),
            ],
        ),
    ],
)
def test_batch_rejects_carry_index_and_reencoded_element(
    elements: list[Any], reasons: list[tuple[str, int, bytes]]
) -> None:
    _, rejects = normalize(orjson.dumps(elements))
    assert [(r.reason, r.batch_index, r.payload) for r in rejects] == reasons


@pytest.mark.parametrize(
    "value, reason",
    [
        # a single CDR keeps its exact bytes, spacing and key order included
        (b'{ "id" : "x",  "customer_id": "c" }', "missing_field"),
        (b'  {"id": "x", "customer_id": "c", "dst": "+44", "start_time": "2026-11-25T09:00:00"}', "bad_time"),
        # not JSON, or JSON of another shape: the exact bytes too
        (b"not json", "bad_json"),
        (b'{"a": NaN}', "bad_json"),
        (b"[]", "bad_json"),
        (b"3", "bad_json"),
        (b"", "bad_json"),
    ],
)
def test_whole_message_reject_keeps_original_bytes(value: bytes, reason: str) -> None:
    records, rejects = normalize(value)
    assert records == []
    assert [(r.reason, r.payload, r.batch_index) for r in rejects] == [(reason, value, None)]


def test_missing_value_is_bad_json_with_empty_payload() -> None:
    assert normalize(None) == ([], [Reject("bad_json", "message has no value", b"", None)])


@pytest.mark.parametrize(
    "too_late_before_ms, expect_record",
    [
        (START_MS, True),  # exactly at the limit: kept
        (START_MS + 1, False),  # one ms older than the limit: too late
    ],
)
def test_too_late(too_late_before_ms: int, expect_record: bool) -> None:
    value = orjson.dumps(doc())
    records, rejects = normalize(value, too_late_before_ms=too_late_before_ms)
    if expect_record:
        assert (records, rejects) == ([record()], [])
    else:
        assert records == []
        assert rejects == [Reject("too_late", "start_time is older than the longest retention", value, None)]


def test_too_late_in_a_batch_keeps_newer_siblings() -> None:
    old = doc(id="old", start_time=START_MS - 10_000)
    value = orjson.dumps([old, doc(id="new")])
    records, rejects = normalize(value, too_late_before_ms=START_MS)
    assert records == [record(id="new")]
    assert [(r.reason, r.batch_index, r.payload) for r in rejects] == [("too_late", 0, orjson.dumps(old))]


def test_record_round_trips_through_the_internal_topic_encoding() -> None:
    records, _ = normalize(orjson.dumps([doc(id="a"), doc(id="b", customer_charge=None)]))
    wire = orjson.dumps(records, default=tuple)
    assert [Record(*fields) for fields in orjson.loads(wire)] == records


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"provider_charge": "20000000000000"}, "bad_money"),
        ({"customer_charge": 1e300}, "bad_money"),
        ({"duration": 1e300}, "bad_field"),
    ],
)
def test_absurd_magnitudes_are_rejected_not_encoded(changes: dict[str, Any], reason: str) -> None:
    """Values that would overflow the internal topic's 64-bit integers never get that far."""
    records, rejects = normalize(orjson.dumps(doc(**changes)))
    assert records == []
    assert [r.reason for r in rejects] == [reason]


EXTREMES: list[Any] = [
    "9" * 5000,
    "0" * 5000 + "1.5",
    "2026-" + "1" * 5000,
    "1e400",
    "-0",
    "NaN",
    "\u0661\u0662",
    "\uff11\uff12",
    "",
    " 1 ",
    None,
    True,
    [],
    {},
    1e308,
    -1e308,
    2**63 - 1,
    -(2**63),
    "2026-11-25T10:00:00+25:00",
]


@pytest.mark.parametrize("field", [*doc(), "dtmf", "answer_time", "end_time", "destination"])
def test_no_value_of_any_field_crashes_normalization(field: str) -> None:
    """Each extreme either passes validation or is rejected with a reason; the valid sibling
    in the batch is always kept."""
    for value in EXTREMES:
        records, rejects = normalize(orjson.dumps([doc(**{field: value}), doc(id="sibling")]))
        assert [r.id for r in records][-1:] == ["sibling"], (field, value)
        assert len(records) + len(rejects) == 2 and all(r.reason for r in rejects), (field, value)
