"""Dead letters: one shape for every entry, and never larger than the dead-letter topic takes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from breakout.errors import ConfigError
from breakout.normalize import Reject
from streams.deadletter import DEFAULT_LIMIT, MAX_DETAIL, MIN_LIMIT, dead_letter
from streams.ingest import value_room

RECEIVED_MS = 1_795_597_201_234
KAFKA_DEFAULT = 1_048_588  # max.message.bytes of a topic that does not set its own
LIMIT = value_room("cdrs.dlq", KAFKA_DEFAULT, MIN_LIMIT)


def entry(payload: bytes, limit: int = LIMIT, detail: str = "why", batch_index: int | None = None) -> Any:
    value = dead_letter(
        Reject("bad_json", detail, payload, batch_index), "cdrs", 2, 81723, RECEIVED_MS, limit=limit
    )
    assert len(value) <= limit
    return orjson.loads(value)


def original_prefix(letter: dict[str, Any]) -> bytes:
    if letter["payload_encoding"] == "base64":
        return base64.b64decode(letter["payload"])
    return str(letter["payload"]).encode()


def test_a_whole_payload_and_where_it_came_from() -> None:
    payload = b'{"id": "c-1"}'
    assert orjson.loads(
        dead_letter(
            Reject("missing_field", "customer_id is required", payload, 3), "cdrs", 2, 81723, RECEIVED_MS
        )
    ) == {
        "error": "missing_field",
        "detail": "customer_id is required",
        "payload": '{"id": "c-1"}',
        "payload_encoding": "text",
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_truncated": False,
        "batch_index": 3,
        "topic": "cdrs",
        "partition": 2,
        "offset": 81723,
        "received_at": "2026-11-25T09:00:01.234000+00:00",
    }


def test_a_value_that_is_not_utf8_is_kept_as_base64() -> None:
    payload = b"\xff\xfe not text"
    letter = entry(payload)
    assert (letter["payload_encoding"], letter["payload_truncated"]) == ("base64", False)
    assert base64.b64decode(letter["payload"]) == payload


@pytest.mark.parametrize(
    "payload, encoding",
    [
        (bytes(range(128, 256)) * 6250, "base64"),  # 800 KB that is not UTF-8: base64 makes it 1.07 MB
        (b"\x01" * 200_000, "text"),  # 200 KB that JSON escapes to 1.2 MB (\u0001)
        ('{"id": "é€😀\\"\n'.encode() * 100_000, "text"),  # 1.7 MB of valid UTF-8
        ("😀".encode() * 300_000, "text"),  # every cut point falls inside a 4-byte character
        (b"a" * (LIMIT - 300), "text"),  # fits alone, not with the rest of the entry
    ],
    ids=["not-utf8-800k", "ctl-200k", "utf8-1.7m", "4-byte-chars", "just-over"],
)
def test_a_payload_too_large_keeps_the_longest_prefix_that_fits(payload: bytes, encoding: str) -> None:
    value = dead_letter(Reject("bad_json", "why", payload), "cdrs", 2, 81723, RECEIVED_MS, limit=LIMIT)
    assert LIMIT - 8 < len(value) <= LIMIT  # cut, but no more than one character (or base64 quantum) short
    letter = orjson.loads(value)
    assert letter["payload_encoding"] == encoding and letter["payload_truncated"] is True
    assert letter["payload_bytes"] == len(payload)
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    prefix = original_prefix(letter)
    assert payload.startswith(prefix) and 0 < len(prefix) < len(payload)


@pytest.mark.parametrize("limit", range(MIN_LIMIT, MIN_LIMIT + 40))
def test_every_limit_is_kept_whatever_the_characters_at_the_cut(limit: int) -> None:
    payload = 'ab\x01é€😀"\\\n'.encode() * 5000
    letter = entry(payload, limit=limit)
    assert letter["payload_truncated"] is True
    assert payload.startswith(original_prefix(letter))


def test_a_long_detail_is_cut_short() -> None:
    letter = entry(b"{}", detail="x" * 800_000)
    assert len(letter["detail"]) == MAX_DETAIL and letter["detail"].endswith("…")


def test_min_limit_holds_the_largest_entry_but_its_payload() -> None:
    reject = Reject("unprocessable", "\x01" * 800_000, b"\x01" * 800_000, 2**31)
    value = dead_letter(reject, "t" * 249, 2**31, 2**63 - 1, RECEIVED_MS, limit=MIN_LIMIT)
    assert len(value) <= MIN_LIMIT
    assert orjson.loads(value)["payload_truncated"] is True


def test_the_default_limit_is_below_kafkas_default_with_room_for_framing() -> None:
    value = dead_letter(Reject("too_late", "old", b"\x01" * 200_000), "cdrs", 0, 1, RECEIVED_MS)
    assert len(value) <= DEFAULT_LIMIT <= LIMIT


def test_a_dead_letter_topic_too_small_for_every_entry_stops_the_worker_at_start() -> None:
    assert MIN_LIMIT < LIMIT < KAFKA_DEFAULT
    with pytest.raises(ConfigError, match=r"cdrs.dlq: max.message.bytes=16384 is too small"):
        value_room("cdrs.dlq", MIN_LIMIT, MIN_LIMIT)
