"""``breakout publish`` and ``breakout demo``: put CDR events on the topic, batching sends."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaProducer

from breakout.settings import Settings
from breakout.synthetic import cdr_stream

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


async def publish_lines(settings: Settings, lines: Iterable[bytes], topic: str) -> int:
    """Send each non-blank line as one message; return how many were sent."""
    producer = _producer(settings)
    await producer.start()
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        for line in lines:
            value = line.strip()
            if not value:
                continue
            pending.append(await producer.send(topic, value, key=message_key(value)))
            sent += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def run_publish(settings: Settings, source: IO[bytes], topic: str) -> None:
    """Publish a JSON-lines stream (one CDR or one array of CDRs per line)."""
    sent = asyncio.run(publish_lines(settings, source, topic))
    print(f"published {sent} messages to {topic}", file=sys.stderr)


async def _demo_messages(rate: float, batch: int) -> AsyncIterator[bytes]:
    """Synthetic CDRs at ``rate`` per second of wall-clock time, event time = now."""
    cdrs = cdr_stream(seed=int(time.time()), start_time=time.time(), rate=rate)
    while True:
        started = time.monotonic()
        chunk = [next(cdrs) for _ in range(batch)]
        yield orjson.dumps(chunk if batch > 1 else chunk[0])
        await asyncio.sleep(max(0.0, batch / rate - (time.monotonic() - started)))


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
