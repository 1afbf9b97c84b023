"""Reading dead letters back: entries as ``streams.deadletter`` writes them, selections,
replayable payloads, and the contract check ``breakout publish`` makes before sending."""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from breakout.dlq import (
    UNREADABLE,
    DeadLetter,
    NotReplayable,
    Selection,
    check_line,
    parse_dead_letter,
    parse_instant,
    replay_value,
)
from breakout.normalize import Reject
from streams.deadletter import MIN_LIMIT, dead_letter

NOW_MS = int(time.time() * 1000)
CDR = {
    "id": "c-1",
    "customer_id": "acme",
    "provider_id": "p",
    "dst": "+441234567",
    "start_time": NOW_MS / 1000 - 60,
    "duration": 30,
    "provider_charge": "0.01",
    "customer_charge": "0.02",
}


def letter(
    payload: bytes, reason: str = "too_late", *, limit: int = 1_000_000, at: int = NOW_MS
) -> DeadLetter:
    value = dead_letter(Reject(reason, "why", payload, None), "cdrs", 2, 7, at, limit=limit)
    return parse_dead_letter(0, 5, at, value)


def test_an_entry_reads_back_with_its_reason_source_and_place() -> None:
    read = letter(orjson.dumps(CDR))
    assert read.reason == "too_late"
    document = read.document()
    assert (document["dlq_partition"], document["dlq_offset"]) == (0, 5)
    assert (document["topic"], document["partition"], document["offset"]) == ("cdrs", 2, 7)
    assert "too_late  cdrs/2@7  (dlq 0@5)" in read.line()


@pytest.mark.parametrize("value", [b"not json", b"[1, 2]", b'{"detail": "no error field"}', None])
def test_a_message_that_is_no_entry_is_shown_not_dropped(value: bytes | None) -> None:
    read = parse_dead_letter(1, 9, NOW_MS, value)
    assert read.reason == UNREADABLE
    with pytest.raises(NotReplayable, match="not a dead-letter entry"):
        replay_value(read)


@pytest.mark.parametrize("payload", [orjson.dumps(CDR), b'{"id": "\xc3\xa9"}', b"\xff\xfe binary"])
def test_replay_sends_the_payload_byte_for_byte(payload: bytes) -> None:
    assert replay_value(letter(payload)) == payload


def test_a_cut_payload_is_not_replayed_and_says_where_the_whole_one_is() -> None:
    read = letter(b"x" * (MIN_LIMIT * 2), limit=MIN_LIMIT)
    assert read.entry["payload_truncated"]
    with pytest.raises(NotReplayable, match="cdrs partition 2 at offset 7"):
        replay_value(read)


def test_an_empty_or_altered_payload_is_not_replayed() -> None:
    with pytest.raises(NotReplayable, match="no payload carried"):
        replay_value(letter(b""))
    altered = letter(b'{"id": 1}')
    altered.entry["payload"] = '{"id": 2}'
    with pytest.raises(NotReplayable, match="sha256"):
        replay_value(altered)
    binary = letter(b"\xff\x00")
    assert binary.entry["payload_encoding"] == "base64"
    assert base64.b64decode(binary.entry["payload"]) == b"\xff\x00"


def test_a_selection_holds_every_bound_given() -> None:
    read = letter(b"{}", reason="too_late", at=1_000_000)
    assert Selection().matches(read)
    assert Selection(reasons=frozenset({"too_late", "bad_json"})).matches(read)
    assert not Selection(reasons=frozenset({"bad_json"})).matches(read)
    assert Selection(since_ms=1_000_000, until_ms=1_000_001).matches(read)
    assert not Selection(since_ms=1_000_001).matches(read)
    assert not Selection(until_ms=1_000_000).matches(read)
    assert Selection(partition=0, from_offset=5, to_offset=5).matches(read)
    assert not Selection(partition=1).matches(read)
    assert not Selection(partition=0, from_offset=6).matches(read)
    assert not Selection(partition=0, to_offset=4).matches(read)


def test_instants_are_iso_8601_in_utc_unless_they_say_otherwise() -> None:
    assert parse_instant("2026-11-26") == 1_795_651_200_000
    assert parse_instant("2026-11-26T01:00:00") == 1_795_654_800_000
    assert parse_instant("2026-11-26T02:00:00+01:00") == 1_795_654_800_000
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_instant("yesterday")


def check(value: bytes, limit: int = 10_000) -> list[str]:
    return check_line(value, limit=limit, default_currency="USD", now_ms=NOW_MS)


def test_the_publish_check_passes_valid_cdrs_and_batches() -> None:
    assert check(orjson.dumps(CDR)) == []
    assert check(orjson.dumps([CDR, dict(CDR, id="c-2")])) == []


def test_the_publish_check_says_why_and_which_element() -> None:
    assert check(b"{not json")[0].startswith("bad_json: not JSON")
    bad = dict(CDR, customer_charge="lots")
    assert check(orjson.dumps(bad))[0].startswith("bad_money: customer_charge")
    problems = check(orjson.dumps([CDR, bad, {k: v for k, v in CDR.items() if k != "id"}]))
    assert [p.split(":")[0] for p in problems] == ["[1] bad_money", "[2] missing_field"]
    assert check(orjson.dumps(CDR), limit=50) == [
        f"too_large: {len(orjson.dumps(CDR))} bytes, the topic takes at most 50"
    ]
