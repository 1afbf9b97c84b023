"""Dead-letter entries: what was refused, why, and where it came from, within the topic's size limit."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from breakout.normalize import Reject

# Below Kafka's default max.message.bytes (1,048,588), with room for the record's framing.
DEFAULT_LIMIT = 1_000_000
MAX_DETAIL = 1_000  # characters: a detail is a sentence for a person
# Every entry fits in this much once its payload is cut to nothing: the detail takes at most
# 6 bytes a character (\u0001), a topic name at most 249 ASCII characters, the rest is short.
MIN_LIMIT = 16 * 1024


def dead_letter(
    reject: Reject,
    topic: str,
    partition: int,
    offset: int,
    received_ms: int,
    *,
    limit: int = DEFAULT_LIMIT,
) -> bytes:
    """The JSON value of a dead-letter message, at most ``limit`` bytes (if ``limit >= MIN_LIMIT``).

    The payload is kept as text when it is UTF-8 (always, for JSON), otherwise as base64
    with ``payload_encoding`` saying so. An entry larger than the dead-letter topic takes
    would be refused by the broker and stop the ingest, so a payload that does not fit is
    cut to its longest prefix that does (whole characters, for text; JSON escaping can make
    one byte six, base64 makes three bytes four, so it is the encoded entry that is
    measured) and ``payload_truncated`` says so. ``payload_bytes`` and ``payload_sha256``
    always describe the whole payload; topic, partition, offset and ``batch_index`` find
    it at the source.
    """
    payload = reject.payload
    shown: Callable[[bytes], str]
    try:
        text, encoding, shown = payload.decode("utf-8"), "text", _text_prefix
    except UnicodeDecodeError:
        text, encoding, shown = _base64(payload), "base64", _base64
    detail = reject.detail if len(reject.detail) <= MAX_DETAIL else reject.detail[: MAX_DETAIL - 1] + "…"
    entry: dict[str, Any] = {
        "error": reject.reason,
        "detail": detail,
        "payload": text,
        "payload_encoding": encoding,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_truncated": False,
        "batch_index": reject.batch_index,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": datetime.fromtimestamp(received_ms / 1000, UTC).isoformat(),
    }
    value = orjson.dumps(entry)
    if len(value) <= limit:
        return value
    room = limit - (len(value) - len(orjson.dumps(text)))  # what the payload's JSON string may take
    entry["payload"] = _longest_fitting(payload, room, shown)
    entry["payload_truncated"] = True
    return orjson.dumps(entry)


def _longest_fitting(payload: bytes, room: int, shown: Callable[[bytes], str]) -> str:
    """``shown`` of the longest prefix of ``payload`` whose JSON string takes at most ``room`` bytes.

    A binary search over the prefix length: the encoded size only grows with the prefix.
    A prefix of ``room`` bytes never fits (every byte takes at least one, and the quotes
    two more), so only the first ``room`` bytes of a large payload are ever looked at.
    """
    fits, too_long = 0, min(len(payload), room)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(orjson.dumps(shown(payload[:middle]))) <= room:
            fits = middle
        else:
            too_long = middle
    return shown(payload[:fits])


def _text_prefix(prefix: bytes) -> str:
    # The whole payload is UTF-8, so only a character cut in two at the end can be invalid.
    return prefix.decode("utf-8", "ignore")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
