"""Dead-letter entries: what was refused, why, and where it came from."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson

from breakout.normalize import Reject


def dead_letter(reject: Reject, topic: str, partition: int, offset: int, received_ms: int) -> bytes:
    """The JSON value of a dead-letter message.

    The payload is kept as text when it is UTF-8 (always, for JSON), otherwise as
    base64 with ``payload_encoding`` saying so: nothing refused is ever lost.
    """
    try:
        payload, encoding = reject.payload.decode("utf-8"), "text"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(reject.payload).decode("ascii"), "base64"
    return orjson.dumps(
        {
            "error": reject.reason,
            "detail": reject.detail,
            "payload": payload,
            "payload_encoding": encoding,
            "batch_index": reject.batch_index,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "received_at": datetime.fromtimestamp(received_ms / 1000, UTC).isoformat(),
        }
    )
