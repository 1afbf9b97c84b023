"""``breakout dlq`` and ``breakout dlq replay``: the dead-letter topic, read and sent back.

The reading side is a plain consumer with no group: it commits nothing, so reading the
dead letters never moves anything a worker depends on, and two people may read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from breakout.dlq import DeadLetter, NotReplayable, Selection, parse_dead_letter, replay_value
from breakout.settings import Settings
from streams.publish import message_key

POLL_MS = 500


class DeadLetterReader:
    """Every dead letter from the start of the topic, then (``follow``) each new one."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.dlq_topic
        self.bootstrap = settings.kafka
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None
        )
        self._early: list[DeadLetter] = []

    async def __aenter__(self) -> DeadLetterReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def existing(self) -> list[DeadLetter]:
        """The dead letters in the topic now, oldest first per partition (none: no topic yet)."""
        consumer = self._consumer
        partitions = await self._partitions()
        if not partitions:
            return []
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []
        while waiting := [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            consumer.pause(*(tp for tp in tps if tp not in waiting))
            letters.extend(await self._poll())
        consumer.resume(*tps)
        # What arrived after ``end_offsets`` in the last poll is ``newer``'s to show.
        self._early = [
            letter
            for letter in letters
            if letter.offset >= ends[TopicPartition(self.topic, letter.partition)]
        ]
        return [
            letter for letter in letters if letter.offset < ends[TopicPartition(self.topic, letter.partition)]
        ]

    async def _partitions(self) -> list[int]:
        """The topic's partitions, asked of the broker (the consumer's own metadata is
        only what it has subscribed to); none if there is no such topic yet."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        if described["error_code"]:  # no such topic: nothing was ever dead-lettered
            return []
        return sorted(partition["partition"] for partition in described["partitions"])

    async def newer(self) -> AsyncIterator[DeadLetter]:
        """Each dead letter after ``existing``'s, as it arrives, until cancelled."""
        for letter in self._early:
            yield letter
        while not self._consumer.assignment():  # no topic yet: wait for the first dead letter
            await asyncio.sleep(POLL_MS / 1000)
            if partitions := await self._partitions():
                tps = [TopicPartition(self.topic, p) for p in partitions]
                self._consumer.assign(tps)
                await self._consumer.seek_to_beginning(*tps)
        while True:
            for letter in await self._poll():
                yield letter

    async def _poll(self) -> list[DeadLetter]:
        batches = await self._consumer.getmany(timeout_ms=POLL_MS)
        return [
            parse_dead_letter(tp.partition, record.offset, record.timestamp, record.value)
            for tp, records in batches.items()
            for record in records
        ]


async def show(
    settings: Settings, selection: Selection, last: int | None, as_json: bool, follow: bool
) -> None:
    """Counts by reason and the newest ``last`` dead letters (all: None), then new ones if ``follow``."""
    async with DeadLetterReader(settings) as reader:
        letters = [letter for letter in await reader.existing() if selection.matches(letter)]
        letters.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
        newest = letters if last is None else letters[len(letters) - last :] if last else []
        if not as_json:
            counts = Counter(letter.reason for letter in letters)
            print(f"{len(letters):,} dead letters in {reader.topic}" + (":" if counts else ""))
            for reason, count in counts.most_common():
                print(f"  {reason:<24} {count:>10,}")
            if newest:
                print(f"\nnewest {len(newest):,}, oldest first:")
        for letter in newest:
            _print(letter, as_json)
        if follow:
            if not as_json:
                print("\nfollowing (Ctrl-C to stop):", flush=True)
            async for letter in reader.newer():
                if selection.matches(letter):
                    _print(letter, as_json)


def _print(letter: DeadLetter, as_json: bool) -> None:
    print(orjson.dumps(letter.document()).decode() if as_json else letter.line(), flush=True)


@dataclass(frozen=True)
class Replayed:
    sent: int
    refused: list[tuple[DeadLetter, str]]


async def replay(settings: Settings, selection: Selection, topic: str, dry_run: bool) -> Replayed:
    """Send the payload of every selected dead letter back to ``topic``, keyed like ``publish``."""
    async with DeadLetterReader(settings) as reader:
        letters = [letter for letter in await reader.existing() if selection.matches(letter)]
    values: list[bytes] = []
    refused: list[tuple[DeadLetter, str]] = []
    for letter in letters:
        try:
            values.append(replay_value(letter))
        except NotReplayable as exc:
            refused.append((letter, str(exc)))
    if values and not dry_run:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", linger_ms=20)
        await producer.start()
        try:
            sends = [await producer.send(topic, value, key=message_key(value)) for value in values]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
    return Replayed(len(values), refused)


def run_show(settings: Settings, selection: Selection, last: int | None, as_json: bool, follow: bool) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(show(settings, selection, last, as_json, follow))


def run_replay(settings: Settings, selection: Selection, topic: str, dry_run: bool) -> int:
    """Replay, report on stderr; exit status 1 if a selected dead letter could not be sent."""
    result = asyncio.run(replay(settings, selection, topic, dry_run))
    verb = "would replay" if dry_run else "replayed"
    print(f"{verb} {result.sent:,} dead letters to {topic}", file=sys.stderr)
    for letter, why in result.refused:
        print(
            f"  not replayed: dlq {letter.partition}@{letter.offset} ({letter.reason}): {why}",
            file=sys.stderr,
        )
    return 1 if result.refused else 0
