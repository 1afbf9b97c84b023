"""The foundation's promise: the suite talks to a real Kafka broker and a real Redis."""

from __future__ import annotations

import asyncio

import faust
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from breakout.settings import Settings
from streams.app import create_app
from streams.topics import ensure_topics


async def test_aiokafka_round_trip(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic, b'{"id": "1"}', key=b"cust-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka,
        group_id=settings.app_id,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"cust-1", b'{"id": "1"}')


async def test_faust_agent_consumes_from_the_broker(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic])
    app: faust.App = create_app(settings)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    @app.agent(app.topic(settings.topic, value_serializer="raw"))
    async def collect(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            await received.put(value)

    await app.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
        await producer.start()
        try:
            for n in range(3):
                await producer.send_and_wait(settings.topic, f"cdr-{n}".encode(), key=b"k")
        finally:
            await producer.stop()
        got = [await asyncio.wait_for(received.get(), timeout=60) for _ in range(3)]
    finally:
        await app.stop()
    assert got == [b"cdr-0", b"cdr-1", b"cdr-2"]


async def test_redis_round_trip(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis)
    try:
        key = f"{settings.app_id}:probe"
        await client.set(key, "exact", ex=60)
        assert await client.get(key) == b"exact"
        info = await client.info("server")
        assert "redis_version" in info
    finally:
        await client.aclose()
