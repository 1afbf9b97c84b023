"""Poison messages on the real broker: none stops the ingest; every CDR is counted or dead-lettered.

Each message here once made ``breakout worker`` exit on every restart (a nesting orjson could
read but not write, a dead letter or an internal message over the broker's 1 MiB limit). They
are published between valid CDRs, and one worker must count every valid CDR once, dead-letter
every invalid one once with its reason, within the dead-letter topic's size limit, and live on.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from breakout.settings import Settings
from streams.topics import max_message_bytes
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    publish,
    read_counters,
    read_mirror,
    with_dial_codes,
)

MAXIMAL_CDRS = 5_000
MAXIMAL_PER_MESSAGE = 250  # about 780 KB a message
# Multi-byte characters, characters JSON escapes (one of them to six bytes), line separators.
PALETTE = 'aé€😀"\\\x01\n\u2028'
NEAR_LIMIT = 1_040_000  # a message value just under the CDR topic's 1,048,588 bytes


def text(kind: str, n: int) -> str:
    """A 256-character text field, unique per ``n``, that does not start or end with a space."""
    head = f"{kind}-{n}-"
    return head + (PALETTE * 30)[: 256 - len(head) - 1] + "z"


def cdr(cdr_id: str, start: float, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": cdr_id,
        "customer_id": "cust-poison",
        "provider_id": "prov-poison",
        "dst": "+2001234567",
        "start_time": round(start, 3),
        "duration": 42,
        "status": "answered",
        "provider_charge": "0.010000",
        "customer_charge": "0.020000",
        "currency": "USD",
        "dtmf": 0,
    }
    document.update(changes)
    return document


def brackets(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def with_extra(document: dict[str, Any], extra: bytes) -> bytes:
    """``document`` as JSON with one more field whose JSON text is ``extra`` (any depth)."""
    return orjson.dumps(document)[:-1] + b',"extra":' + extra + b"}"


class Corpus:
    """Messages to publish, the valid CDRs among them and the dead letters they must make."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.valid: list[dict[str, Any]] = []
        self.dead: list[tuple[str, bytes]] = []  # (reason, whole payload)

    def batch(self, *elements: tuple[bytes, str | None]) -> None:
        """A batch of JSON elements, each with the reason it is refused for (None: valid)."""
        self.messages.append(b"[" + b",".join(element for element, _ in elements) + b"]")
        for element, reason in elements:
            if reason is None:
                self.valid.append(orjson.loads(element))
            else:
                self.dead.append((reason, element))

    def whole(self, value: bytes, reason: str) -> None:
        """A message refused whole, with its exact bytes as the payload."""
        self.messages.append(value)
        self.dead.append((reason, value))


def poison(start: float) -> Corpus:
    """Every kind of message that once stopped the worker, valid CDRs starting at ``start`` among them."""
    corpus = Corpus()
    valid = iter(cdr(f"poison-ok-{n}", start + n) for n in range(100))
    corpus.batch((brackets(300), "not_an_object"))  # nested deeper than orjson writes (254)
    corpus.batch((brackets(999), "not_an_object"))
    corpus.whole(brackets(1025), "bad_json")  # deeper than orjson reads (1,024)
    corpus.batch(
        (orjson.dumps(next(valid)), None),
        (with_extra(cdr("deep-bad", start, dst="x"), brackets(300)), "bad_field"),
        (with_extra(next(valid), brackets(300)), None),
    )
    corpus.whole(bytes(range(128, 256)) * 6250, "bad_json")  # 800 KB that is not UTF-8
    corpus.whole(b"\x01" * 200_000, "bad_json")  # 200 KB that JSON escapes six-fold
    two_byte_characters = NEAR_LIMIT // 2 - 400
    corpus.batch((with_extra(next(valid), b'"' + "é".encode() * two_byte_characters + b'"'), None))
    big_bad = cdr("big-bad", start, provider_charge="-1")  # its dead letter escapes each \" to \\\"
    corpus.batch(
        (orjson.dumps(next(valid)), None),
        (with_extra(big_bad, b'"' + b'\\"' * two_byte_characters + b'"'), "bad_money"),
    )
    assert NEAR_LIMIT - 2000 < max(len(m) for m in corpus.messages) <= NEAR_LIMIT
    corpus.batch(
        (orjson.dumps(next(valid)), None),
        (orjson.dumps(cdr("mixed-money", start, provider_charge="0.1234567")), "bad_money"),
        (b"5", "not_an_object"),
        (orjson.dumps(cdr("mixed-time", start, start_time="2026-01-01T00:00:00")), "bad_time"),
        (orjson.dumps(next(valid)), None),
    )
    maximal = [
        cdr(
            text("id", n),
            start + n * 0.25,
            customer_id=text("customer", n % 6),
            provider_id=text("provider", n % 3),
            destination=text("destination", n % 4),
        )
        for n in range(MAXIMAL_CDRS)
    ]
    for first in range(0, MAXIMAL_CDRS, MAXIMAL_PER_MESSAGE):
        corpus.batch(*((orjson.dumps(c), None) for c in maximal[first : first + MAXIMAL_PER_MESSAGE]))
    return corpus


async def send(settings: Settings, values: list[bytes]) -> None:
    """Each value to a partition in turn, so every partition's ingest meets some poison."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka, acks="all", linger_ms=10, max_request_size=2 << 20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic, value, partition=n % settings.partitions)
            for n, value in enumerate(values)
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_values(settings: Settings, topic: str, count: int, wait: float) -> list[bytes]:
    """The raw values of ``topic``: at least ``count`` (waiting up to ``wait`` s) and any extra."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + wait
    try:
        while len(values) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(m.value for m in messages)
        for messages in (await consumer.getmany(timeout_ms=1000)).values():
            values.extend(m.value for m in messages)
    finally:
        await consumer.stop()
    return values


async def counts(settings: Settings) -> Counter[str]:
    """The counters of CDRs accepted and rejected (by reason), zeros and the rest left out."""
    counters = await read_counters(settings)
    return +Counter({k: v for k, v in counters.items() if k == "accepted" or k.startswith("rejected:")})


def shown_bytes(letter: dict[str, Any]) -> bytes:
    if letter["payload_encoding"] == "base64":
        return base64.b64decode(letter["payload"])
    return str(letter["payload"]).encode()


async def test_no_message_stops_the_ingest(settings: Settings, tmp_path: Path) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    end_time = time.time() - 3600
    data = dataset.generate(seed=3, total=400, end_time=end_time, customers=CUSTOMERS, table=table)
    corpus = poison(end_time - 7200)
    half = len(data.messages) // 2

    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        await publish(settings, data.messages[:half])
        await send(settings, corpus.messages)
        await publish(settings, data.messages[half:])

        valid = list(data.valid.values()) + corpus.valid
        expected = dataset.expected_rows(valid, table)
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=60, worker=worker)
        assert got == expected, diff(got, expected)

        dead_expected = data.invalid + corpus.dead
        expected_counts = Counter({"accepted": len(valid) + data.duplicates}) + Counter(
            f"rejected:{reason}" for reason, _ in dead_expected
        )
        counted = await eventually_equal(lambda: counts(settings), expected_counts, wait=15, worker=worker)
        assert counted == expected_counts
        assert worker.process.poll() is None, worker.tail()
    finally:
        worker.stop()

    limit = (await max_message_bytes(settings, [settings.dlq_topic]))[settings.dlq_topic]
    values = await read_values(settings, settings.dlq_topic, len(dead_expected), wait=30)
    assert max(len(v) for v in values) <= limit
    letters = [orjson.loads(v) for v in values]
    assert Counter((d["error"], d["payload_sha256"]) for d in letters) == Counter(
        (reason, hashlib.sha256(payload).hexdigest()) for reason, payload in dead_expected
    )
    payloads = {hashlib.sha256(payload).hexdigest(): payload for _, payload in dead_expected}
    for letter in letters:
        payload = payloads[letter["payload_sha256"]]
        assert letter["payload_bytes"] == len(payload)
        if letter["payload_truncated"]:
            assert payload.startswith(shown_bytes(letter)) and len(shown_bytes(letter)) < len(payload)
        else:
            assert shown_bytes(letter) == payload
    assert sum(d["payload_truncated"] for d in letters) == 3  # 800 KB, 200 KB and the near-limit element
