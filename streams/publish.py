"""``breakout publish`` and ``breakout demo``: put CDR events on the topic, batching sends."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from breakout.dlq import check_line
from breakout.settings import Settings
from breakout.synthetic import cdr_stream
from streams.ingest import FRAMING_BYTES
from streams.topics import KAFKA_DEFAULT, max_message_bytes

# Sends in flight before we wait for their acknowledgements: bounds memory, keeps batches full.
IN_FLIGHT = 5_000


def message_key(value: bytes) -> bytes | None:
    """The Kafka key of one message: its CDR's ``customer_id`` (a batch's first), else none.

    Keying by customer keeps one customer's CDRs, and so any re-delivery of one, on one
    partition; a message whose customer cannot be read is still sent, unkeyed, and the
    worker decides what it is.
    """
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, list) and document:
        document = document[0]
    customer = document.get("customer_id") if isinstance(document, dict) else None
    return customer.encode() if isinstance(customer, str) and customer else None


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        acks="all",
        enable_idempotence=False,
    )


@dataclass
class Published:
    sent: int = 0
    refused: list[tuple[int, list[str]]] = field(default_factory=list)  # (line number, why)


async def _limit(settings: Settings, topic: str) -> int:
    """The largest value ``topic`` takes: its broker limit less the record's framing."""
    try:
        limits = await max_message_bytes(settings, [topic])
    except KafkaError:  # no such topic yet: it will get the broker's default
        limits = {topic: KAFKA_DEFAULT}
    return limits[topic] - FRAMING_BYTES


async def publish_lines(
    settings: Settings, lines: Iterable[bytes], topic: str, check: bool = True
) -> Published:
    """Send each non-blank line as one message, unless ``check`` finds it would be refused.

    The check is the contract's (``breakout.dlq.check_line``): a line it refuses is not
    sent, and is reported with its number, so a file is fixed and sent again rather than
    half dead-lettered.
    """
    limit = await _limit(settings, topic)
    producer = _producer(settings)
    await producer.start()
    published = Published()
    pending: list[asyncio.Future[Any]] = []
    try:
        for number, line in enumerate(lines, start=1):
            value = line.strip()
            if not value:
                continue
            now_ms = int(time.time() * 1000)
            if check and (
                problems := check_line(value, limit=limit, default_currency=settings.currency, now_ms=now_ms)
            ):
                published.refused.append((number, problems))
                continue
            pending.append(await producer.send(topic, value, key=message_key(value)))
            published.sent += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return published


def run_publish(settings: Settings, source: IO[bytes], topic: str, check: bool = True) -> int:
    """Publish a JSON-lines stream (one CDR or one array of CDRs per line); exit status 1 if
    a line was refused."""
    published = asyncio.run(publish_lines(settings, source, topic, check))
    for number, problems in published.refused:
        for problem in problems:
            print(f"line {number}: {problem}", file=sys.stderr)
    refused = len(published.refused)
    print(
        f"published {published.sent} messages to {topic}"
        + (f"; refused {refused} lines, not sent" if refused else ""),
        file=sys.stderr,
    )
    return 1 if refused else 0


async def _demo_messages(rate: float, batch: int) -> AsyncIterator[bytes]:
    """Synthetic CDRs at ``rate`` per second, each message sent once the wall clock reaches
    its newest CDR's start time, so event time stays now however long sends and sleeps
    take. (Sleeping ``batch / rate`` minus what the batch took fell behind by every
    sleep's overshoot: about 9 % at 200 CDR/s, the ``as_of`` age growing 2.5 s a minute.)"""
    cdrs = cdr_stream(seed=int(time.time()), start_time=time.time(), rate=rate)
    while True:
        chunk = [next(cdrs) for _ in range(batch)]
        await asyncio.sleep(max(0.0, chunk[-1]["start_time"] - time.time()))
        yield orjson.dumps(chunk if batch > 1 else chunk[0])


async def demo(settings: Settings, rate: float, batch: int) -> None:
    """Publish synthetic traffic until cancelled."""
    producer = _producer(settings)
    await producer.start()
    try:
        async for value in _demo_messages(rate, batch):
            await producer.send(settings.topic, value, key=message_key(value))
    finally:
        await producer.stop()


def run_demo(settings: Settings, rate: float, batch: int) -> None:
    """``breakout demo``: synthetic CDRs to the topic until SIGINT/SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(demo(settings, rate, batch))
