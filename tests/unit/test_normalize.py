"""The ingest step: one raw message in, records and rejects out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from breakout.cdr import FUTURE_SLACK_MS, MAX_DTMF, MAX_DURATION_S, MAX_REVISION, MAX_TEXT
from breakout.destinations import DialCodes
from breakout.money import MAX_MICROS
from breakout.normalize import (
    MAX_RECORD_BYTES,
    ORIGIN_TEXT_BYTES,
    UNPROCESSABLE,
    Record,
    Reject,
    internal_messages,
    normalize_message,
    reencode,
)

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
        effective=True,
    )
    return base._replace(**changes)


def normalize(value: bytes | None, dial_codes: DialCodes = DIAL_CODES) -> tuple[list[Record], list[Reject]]:
    return normalize_message(value, dial_codes=dial_codes, default_currency="USD", now_ms=NOW_MS)


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
        (doc(status="failed", duration=0), [record(connected=False, duration_ms=0, effective=False)]),
        (doc(sip_code=503, pdd_ms=2500), [record(sip_code=503, pdd_ms=2500, effective=False)]),
        (doc(status="failed", sip_code=486), [record(connected=False, sip_code=486)]),
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


def test_record_round_trips_through_the_internal_topic_encoding() -> None:
    records, _ = normalize(orjson.dumps([doc(id="a"), doc(id="b", customer_charge=None)]))
    wire = orjson.dumps(records, default=tuple)
    assert [Record(*fields) for fields in orjson.loads(wire)] == records


def test_a_revision_round_trips_through_the_internal_topic_encoding() -> None:
    [revised], _ = normalize(orjson.dumps(doc(revision=2)))
    assert revised.revision == 2 and revised.origin is not None
    [fields] = orjson.loads(orjson.dumps([revised], default=tuple))
    decoded = Record(*fields)
    assert decoded.revision == 2
    assert decoded._replace(origin=tuple(fields[11])) == revised  # the origin decodes as a list


@pytest.mark.parametrize("length", [11, 12, 13])
def test_records_written_by_older_versions_still_decode(length: int) -> None:
    """New fields are appended: an older record on the internal topic (11 fields before
    ``origin``, 12 before ``revision``, 13 before ``effective``, ``pdd_ms``, ``sip_code``)
    decodes positionally, with the defaults (the ledger then takes effective from connected)."""
    [fields] = orjson.loads(orjson.dumps([record()], default=tuple))
    assert len(fields) == len(Record._fields) == 16
    assert Record._fields[11:] == ("origin", "revision", "effective", "pdd_ms", "sip_code")
    assert Record(*fields[:length]) == record(effective=False) and Record(*fields[:length]).revision == 0


@pytest.mark.parametrize(
    "revision, expected",
    [(None, 0), (0, 0), (5, 5), (MAX_REVISION, MAX_REVISION)],
)
def test_revision_is_carried_to_the_record(revision: Any, expected: int) -> None:
    assert normalize(orjson.dumps([doc(revision=revision)]))[0][0].revision == expected


def test_an_absent_revision_is_0() -> None:
    assert "revision" not in doc()
    assert normalize(orjson.dumps(doc())) == ([record(revision=0)], [])


@pytest.mark.parametrize("revision", [2**31, -1, 1.0, "1", True])
def test_a_bad_revision_is_refused_and_its_siblings_kept(revision: Any) -> None:
    bad = doc(id="bad", revision=revision)
    records, rejects = normalize(orjson.dumps([doc(id="a"), bad]))
    assert records == [record(id="a")]
    assert rejects == [
        Reject(
            "bad_field",
            f"revision: expected a whole number from 0 to 2147483647, got {revision!r}",
            orjson.dumps(bad),
            1,
        )
    ]


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


@pytest.mark.parametrize("field", [*doc(), "dtmf", "revision", "answer_time", "end_time", "destination"])
def test_no_value_of_any_field_crashes_normalization(field: str) -> None:
    """Each extreme either passes validation or is rejected with a reason; the valid sibling
    in the batch is always kept."""
    for value in EXTREMES:
        records, rejects = normalize(orjson.dumps([doc(**{field: value}), doc(id="sibling")]))
        assert [r.id for r in records][-1:] == ["sibling"], (field, value)
        assert len(records) + len(rejects) == 2 and all(r.reason for r in rejects), (field, value)


# --- nothing a message holds stops normalization ---------------------------------------


def brackets(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [254, 255, 300, 1000, 1024])
def test_deeply_nested_batch_element_is_refused_whole(depth: int) -> None:
    """orjson reads 1,024 levels but writes only 254: the refused element is re-encoded anyway."""
    assert normalize(brackets(depth)) == (
        [],
        [Reject("not_an_object", "expected a CDR object, got list", brackets(depth - 1), 0)],
    )


def test_nesting_past_what_json_decoding_accepts_is_bad_json() -> None:
    value = brackets(1025)
    records, rejects = normalize(value)
    assert records == []
    assert [(r.reason, r.payload, r.batch_index) for r in rejects] == [("bad_json", value, None)]


def test_deeply_nested_single_cdr_keeps_its_exact_bytes() -> None:
    value = orjson.dumps(doc(id=None))[:-1] + b',"extra":' + brackets(1000) + b"}"
    assert normalize(value) == ([], [Reject("missing_field", "id is required", value, None)])


@pytest.mark.parametrize("depth", [254, 255, 300, 1000])
def test_deep_extra_field_in_a_batch_keeps_valid_siblings(depth: int) -> None:
    """Unknown fields are ignored however deep; a refused element keeps them, exactly."""
    bad = orjson.dumps(doc(id="bad", dst="x"))[:-1] + b',"extra":' + brackets(depth) + b"}"
    deep_but_valid = orjson.dumps(doc(id="deep"))[:-1] + b',"extra":' + brackets(depth) + b"}"
    value = b"[" + orjson.dumps(doc(id="ok")) + b"," + bad + b"," + deep_but_valid + b"]"
    records, rejects = normalize(value)
    assert records == [record(id="ok"), record(id="deep")]
    assert rejects == [Reject("bad_field", "dst: expected up to 32 digits, got 'x'", bad, 1)]


def test_reencode_past_orjsons_depth_writes_what_orjson_would() -> None:
    inner = {"s": 'quote " back \\ ctl \x01 \u2028 é 😀', "n": [1, -2.5, 1e300, None, True, False], "o": {}}
    wrapped: Any = inner
    for _ in range(300):
        wrapped = [wrapped, {"k": []}]
    expected = inner_text = orjson.dumps(inner)
    for _ in range(300):
        expected = b"[" + expected + b',{"k":[]}]'
    assert reencode(wrapped) == expected
    assert reencode(inner) == inner_text


class BrokenDialCodes(DialCodes):
    """A stand-in for a bug: the lookup fails the way no CDR should make it fail."""

    def lookup(self, number: str) -> str:
        raise KeyError("boom")


def test_unexpected_error_refuses_the_whole_message_as_unprocessable() -> None:
    value = orjson.dumps([doc(id="a", destination="Named"), doc(id="b")])
    assert normalize(value, dial_codes=BrokenDialCodes({})) == (
        [],
        [Reject(UNPROCESSABLE, "KeyError: 'boom'", value, None)],
    )


# --- internal-topic messages --------------------------------------------------------------


def decoded(messages: list[bytes]) -> list[Record]:
    return [Record(*fields) for message in messages for fields in orjson.loads(message)]


def test_internal_messages_are_cut_by_count() -> None:
    records = [record(id=f"c-{n}") for n in range(12)]
    messages = internal_messages(records, max_records=5, max_bytes=1 << 20)
    assert [len(orjson.loads(m)) for m in messages] == [5, 5, 2]
    assert decoded(messages) == records


def test_internal_messages_are_cut_by_encoded_size() -> None:
    records = [record(id=f"{n}-" + "\x01" * 250, customer_id="é" * 256) for n in range(1000)]
    max_bytes = 64 * 1024
    messages = internal_messages(records, max_records=5000, max_bytes=max_bytes)
    assert len(orjson.dumps(records, default=tuple)) > 30 * max_bytes
    assert all(len(m) <= max_bytes for m in messages)
    assert decoded(messages) == records


def test_a_record_too_large_alone_is_not_split_further() -> None:
    messages = internal_messages([record(id="x" * 256)], max_records=5000, max_bytes=10)
    assert decoded(messages) == [record(id="x" * 256)]


@pytest.mark.parametrize("character", ["\x01", '"', "\\", "😀", "€", "\u2028"])
def test_the_largest_record_the_contract_allows_fits_max_record_bytes(character: str) -> None:
    """Every text field at MAX_TEXT characters JSON must escape (or long UTF-8 ones), every
    number at its contract maximum: one record, alone in a message, is within MAX_RECORD_BYTES."""
    text = "x" + character * (MAX_TEXT - 1)  # a leading non-space: the contract wants one
    largest = doc(
        id=text,
        customer_id=text,
        provider_id=text,
        destination=text,
        start_time=NOW_MS + FUTURE_SLACK_MS,
        duration=MAX_DURATION_S,
        provider_charge=str(MAX_MICROS // 1_000_000),
        customer_charge=str(MAX_MICROS // 1_000_000),
        dtmf=MAX_DTMF,
        revision=MAX_REVISION,
    )
    records, rejects = normalize(orjson.dumps(largest))
    assert rejects == [] and len(records) == 1
    [message] = internal_messages(records, max_records=5000, max_bytes=MAX_RECORD_BYTES)
    assert len(message) <= MAX_RECORD_BYTES


def normalize_late(value: bytes, late_before_ms: int) -> list[Record]:
    records, rejects = normalize_message(
        value,
        dial_codes=DIAL_CODES,
        default_currency="USD",
        now_ms=NOW_MS,
        source=("cdrs", 3, 42),
        late_before_ms=late_before_ms,
    )
    assert rejects == []
    return records


def test_only_a_cdr_that_may_be_too_late_carries_its_origin() -> None:
    single = orjson.dumps(doc()) + b"  "
    [fresh] = normalize_late(single, late_before_ms=START_MS)
    assert fresh.origin is None
    [old] = normalize_late(single, late_before_ms=START_MS + 1)
    assert old.origin == ("cdrs", 3, 42, None, single.decode())  # the message, byte for byte
    batch = orjson.dumps([doc(id="a", start_time=START_MS + 10), doc(id="b")])
    fresh, late = normalize_late(batch, late_before_ms=START_MS + 1)
    assert fresh.origin is None
    assert late.origin == ("cdrs", 3, 42, 1, orjson.dumps(doc(id="b")).decode())


def test_a_revision_carries_its_origin_however_fresh() -> None:
    """The aggregator refuses a revision it cannot match (revision_unknown): its dead letter
    needs the CDR as published, like a too-late one's."""
    batch = orjson.dumps([doc(id="a", revision=0), doc(id="b", revision=1)])
    first, revised = normalize_late(batch, late_before_ms=START_MS)
    assert first.origin is None and first.revision == 0
    assert revised.revision == 1
    assert revised.origin == ("cdrs", 3, 42, 1, orjson.dumps(doc(id="b", revision=1)).decode())


def test_an_origin_too_long_to_carry_keeps_only_where_it_was_published() -> None:
    [late] = normalize_late(orjson.dumps(doc(note="x" * ORIGIN_TEXT_BYTES)), late_before_ms=START_MS + 1)
    assert late.origin == ("cdrs", 3, 42, None, None)


def test_the_largest_record_with_its_origin_fits_max_record_bytes() -> None:
    text = "x" + '"' * (MAX_TEXT - 1)
    largest = doc(id=text, customer_id=text, provider_id=text, destination=text, revision=MAX_REVISION)
    filler = '"' * ((ORIGIN_TEXT_BYTES - len(orjson.dumps(largest)) - 20) // 2)
    value = orjson.dumps(largest | {"z": filler})
    assert len(value) <= ORIGIN_TEXT_BYTES
    records = normalize_late(value, late_before_ms=START_MS + 1)
    assert records[0].origin is not None and records[0].origin[4] is not None
    records = [records[0]._replace(origin=("t" * 249, 2**31, 2**62, None, records[0].origin[4]))]
    [message] = internal_messages(records, max_records=5000, max_bytes=MAX_RECORD_BYTES)
    assert len(message) <= MAX_RECORD_BYTES
