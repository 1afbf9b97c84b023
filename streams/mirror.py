"""Mirrors the worker's customer-buckets to Redis as absolute values, and keeps the mirror whole.

Redis is a cache that may be emptied at any moment (restarted without persistence,
flushed, failed over to an empty replica, its scripts forgotten); the tables are the
truth. So the mirror never trusts what it wrote before: every flush first reads the
mirror's *epoch* (``breakout.redis_layout``), and a new epoch means Redis lost what this
worker wrote, so every partition it owns is written whole again, without waiting for new
CDRs. A partition assigned to this worker (start, rebalance) is written whole once too.
Only then does its watermark carry the epoch, which is how readers tell a whole mirror
from a partial one.

How often it flushes is a choice between freshness and cost (``pause_after``). Keeping up
with live traffic, flushes follow each other as closely as the load allows: the next
begins ``FLUSH_SECONDS`` after the last began, or right away when the last took longer,
unless the mirror's own work on the event loop (building the writes and reading Redis's
answers, not waiting for them) took more than ``WRITING_SHARE`` of that time: then a pause
brings it back to that share. What the agent queues behind is that work, not Redis's:
under live traffic a flush spends most of its time waiting for Redis. Working through a
backlog (stream time more than ``BACKLOG_SECONDS`` behind the clock once a flush has
ended: a catch-up after a restart or an outage, or a worker falling behind), CDRs are
late by more than that already, so flushes begin at least twice their length apart: each
then carries more changes per row, which costs Redis and the worker less per CDR. While
one chunk is on its way to Redis the worker builds the next.

One flush (``flush``), in order:
1. Read the epoch (creating it in an empty Redis); a new one forgets which partitions
   are whole.
2. Take what the agent staged since the last flush, and the owned partitions' watermarks
   at that same moment (so a watermark never claims rows not yet taken).
3. Write every row of each owned partition that is not whole in this epoch, in chunks.
4. Write the staged changes, in chunks, each bucket's in one offset-guarded transaction
   (``streams.bucket_writes``).
5. Only if every write succeeded: the watermarks, with the epoch, and the counters.
Each chunk is small enough to finish well inside the socket timeout, so a flush of any
size progresses. A failure keeps the staged changes that were not written
(newer values replacing older ones) and the next flush starts again at step 1, so the
mirror catches up when Redis returns; a partition being written whole starts over, as
Redis may have lost what it had. Writing absolute values (never HINCRBY) makes a
repeated write harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Protocol

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, RowId
from breakout.redis_client import REDIS_ERRORS, Client, EpochKeys, connect
from breakout.redis_layout import Layout, Watermark, joined_epoch
from streams.bucket_writes import BucketWrite, EncodedBucket, RowFields, write_bucket

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
# The most of the event loop's time the mirror's own work may take; more, and it pauses.
WRITING_SHARE = 0.5
# How far the newest stream time of the worker's partitions (in whole seconds, as the last
# flush took it) may be behind the clock when that flush has ended, while it keeps up with
# live traffic; further behind, it is working through a backlog or falling behind. Spacing
# the flushes then gives the agent the loop back: at 15,000 CDR/s in 100-CDR arrays (past
# 90 % of the backlog rate) send → visible p99 was 5.8 to 6.5 s with 3 s here against 8.3 to
# 14.3 s with 10 s (docs/benchmarks.md). It changes nothing while flushes are short (a flush
# under a quarter second begins 0.5 s after the last either way), so a softswitch whose
# clock is behind, or a stream of start times, costs a busy worker's CDRs at most one flush
# of freshness. A flush's own length counts: under heavy live traffic a flush of 1.5-2 s
# takes a worker that keeps up for one in a backlog and pauses it as long (README, "A long
# mirror flush taken for a backlog"), which taking the lag when the flush takes its
# changes would avoid; tried, it was not shown to help, and near the worker's capacity that
# early spacing may be what keeps it from falling behind.
BACKLOG_SECONDS = 3
# In a backlog, a flush is followed by a pause as long as itself.
BACKLOG_SPACING = 2.0
# Rewritten at every flush: a worker that stops writing drops out of the sums within this.
COUNTERS_TTL_SECONDS = 120
# Waits between failed flushes. At most 2 s: once Redis is back the mirror must be whole
# again within seconds, and a pooled connection to the old server can fail once more after
# the return (with a 5 s step that took the repair past 10 s on a loaded machine).
RETRY_SECONDS = (0.5, 1.0, 2.0)
# One pipeline holds at most this many rows (and customer-buckets): each round trip stays
# far below the socket timeout however many rows a flush writes (a re-mirror writes all).
CHUNK_ROWS = 20_000
CHUNK_KEYS = 1_000
# Chunks on their way to Redis at once: Redis runs one while the worker builds the next.
CHUNKS_IN_FLIGHT = 2
# Bucket transactions of one chunk on their way at once, each on a connection of its own.
BUCKETS_IN_FLIGHT = 4
SOCKET_TIMEOUT_SECONDS = 30

# A staged change: the bucket's live value (None: deleted) and the rows to write (None: all).
Change = tuple[CustomerBucket | None, set[RowId] | None]
# A customer-bucket whose write Redis refused: (granularity, start, customer).
Refused = tuple[Granularity, int, str]
# One transaction of a chunk: (granularity, start, its keys' TTL in seconds, the write).
BucketChanges = tuple[Granularity, int, int, EncodedBucket]


class MirrorSource(Protocol):
    """What the mirror reads from the worker's state (``streams.aggregator.Aggregator``)."""

    def owned(self) -> set[int]:
        """Internal-topic partitions assigned to this worker whose tables are recovered."""

    def bucket_keys(self, partitions: set[int]) -> list[BucketKey]:
        """Every customer-bucket the worker holds for ``partitions``."""

    def value(self, key: BucketKey) -> CustomerBucket | None:
        """The bucket's current value (None: it no longer exists)."""

    def watermark(self, partition: int) -> tuple[int, int]:
        """The partition's stream time (ms) and the last offset applied."""


def pause_after(took: float, busy: float, backlog: bool) -> float:
    """Seconds between the end of a flush that took ``took`` seconds, ``busy`` of them the
    mirror's own work on the event loop, and the next (the module's docstring says why)."""
    if backlog:
        return max(FLUSH_SECONDS, took * BACKLOG_SPACING) - took
    return max(FLUSH_SECONDS, busy / WRITING_SHARE, took) - took


def _merge(older: Change | None, newer: Change) -> Change:
    """Two changes of one key as one: the newer value, the union of the rows to write."""
    bucket, rows = newer
    if older is None or bucket is None or rows is None:
        return newer
    older_rows = older[1]
    return (bucket, None if older[0] is None or older_rows is None else older_rows | rows)


def _chunks(changes: dict[BucketKey, Change]) -> Iterator[dict[BucketKey, Change]]:
    """``changes`` in parts of at most ``CHUNK_KEYS`` buckets and about ``CHUNK_ROWS`` rows."""
    chunk: dict[BucketKey, Change] = {}
    rows = 0
    for key, change in changes.items():
        bucket, changed = change
        chunk[key] = change
        rows += 0 if bucket is None else len(bucket.rows) if changed is None else len(changed)
        if len(chunk) >= CHUNK_KEYS or rows >= CHUNK_ROWS:
            yield chunk
            chunk, rows = {}, 0
    if chunk:
        yield chunk


class _PackedConnection(aioredis.Connection):
    """A connection that packs commands with hiredis (C) instead of redis-py's asyncio
    packer, which encodes each argument in Python and re-joins the buffer after each one:
    a bucket write carries a few arguments per row, thousands per command."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CONFIG GET": one word per argument
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # its stub takes 1-tuples


class RedisMirror:
    """Staged changes waiting for Redis, which partitions are whole, and the loop that writes."""

    def __init__(
        self,
        url: str,
        app_id: str,
        retention: Retention,
        counters: Counter[str],
        ingested: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.url = url
        self.ingested = ingested  # the newest event time this worker's ingest step committed
        self.layout = Layout(app_id)
        self.retention = retention
        self.counters = counters
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self.epoch: str | None = None
        self.whole: set[int] = set()  # owned partitions written whole in ``epoch``
        self._staged: dict[BucketKey, Change] = {}
        # Buckets whose last write Redis refused as older than what it holds: the next write
        # of each must carry all its rows, or rows changed meanwhile could be left out.
        self._needs_full: set[BucketKey] = set()
        # Partitions revoked since the running flush took its changes: what it wrote for
        # them neither makes them whole nor comes back to be written again (``forget``).
        self._revoked: set[int] = set()
        self._rows = RowFields()
        self._epoch_keys: EpochKeys | None = None
        self._busy = 0.0  # seconds of the running flush's own work on the event loop
        self.stream_s = 0  # the newest stream time of the partitions owned at the last flush
        self._begun = 0  # flushes begun, numbered from 1
        self._written = 0  # the number of the last flush that ended with its watermarks written
        self._flush_written = asyncio.Condition()  # notified as ``_written`` moves

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None:
        """Remember ``key``'s latest value (None: deleted) and which rows changed (None: all)."""
        if key in self._needs_full:
            self._needs_full.discard(key)
            rows = None
        self._staged[key] = _merge(self._staged.get(key), (bucket, rows))

    def forget(self, partition: int) -> None:
        """On revocation: drop what was staged for ``partition``, and its being whole.

        The agent forgets its own state of the partition too, so should it come back here
        it is restored from the tables and replayed: a change staged before is of another
        run of the same messages, whose rows a new change must not be merged with. And
        whatever the previous owner applied but did not mirror is only written if the
        partition is written whole again on its return.
        """
        self.whole.discard(partition)
        self._revoked.add(partition)
        self._staged = {k: v for k, v in self._staged.items() if k.partition != partition}
        self._needs_full = {k for k in self._needs_full if k.partition != partition}

    async def run(self, source: MirrorSource, stopping: Callable[[], bool]) -> None:
        """Flush after flush until the worker stops (``stopping``: also when a library's
        timeout swallowed the task's cancellation, ``streams.alerts.AlertRunner.run``)."""
        client = connect(
            self.url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=5,
            connection_class=_PackedConnection,
        )
        failures = 0
        try:
            while not stopping():
                began = time.monotonic()
                self._busy = 0.0
                try:
                    await self.flush(client, source)
                except REDIS_ERRORS as exc:
                    delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                    failures += 1
                    log.warning(
                        "Redis mirror: %r; %d keys kept, retrying in %.1fs", exc, len(self._staged), delay
                    )
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    log.info("Redis mirror: caught up after %d failed flushes", failures)
                failures = 0
                took = time.monotonic() - began
                backlog = time.time() - self.stream_s > BACKLOG_SECONDS
                await asyncio.sleep(pause_after(took, self._busy, backlog))
        finally:
            await client.aclose()

    async def settle(self) -> None:
        """Wait until a flush begun after this call has ended with its watermarks written:
        everything staged by now is then in Redis.

        For a planned stop, once the agent has finished: a flush cut off part-way leaves
        some buckets in Redis newer than the watermarks say and others not, a mix that
        stays served until the next worker writes its partitions whole.
        """
        wanted = self._begun + 1
        async with self._flush_written:
            await self._flush_written.wait_for(lambda: self._written >= wanted)

    async def flush(self, client: Client, source: MirrorSource) -> None:
        """One flush: the steps in the module's docstring."""
        self._begun += 1
        number = self._begun
        # Step 1. The epoch: a new one means Redis (or one shard of it) lost what we wrote.
        if self._epoch_keys is None or self._epoch_keys.client is not client:
            self._epoch_keys = EpochKeys(client, self.layout)
        epoch = await self._epoch(client, await self._epoch_keys.keys())
        if epoch != self.epoch:
            if self.epoch is not None:
                log.warning("Redis mirror: Redis lost the mirror (new epoch); writing every row again")
            self.epoch, self.whole = epoch, set()
        # Step 2. The staged changes and, at the same moment, the watermarks they reach.
        owned = source.owned()
        self.whole &= owned
        marks = {p: source.watermark(p) for p in owned}
        ingested_ms = self.ingested()
        staged, self._staged = self._staged, {}
        self._revoked = set()
        stream_s = max((ms for ms, _ in marks.values()), default=int(time.time() * 1000)) // 1000
        self.stream_s = stream_s
        try:
            # Step 3. Partitions not whole in this epoch: every row, read as it is now.
            pending = owned - self.whole
            if pending:
                began = time.monotonic()
                keys = source.bucket_keys(pending)
                whole: Iterator[dict[BucketKey, Change]] = (
                    {k: (source.value(k), None) for k in keys[start : start + CHUNK_KEYS]}
                    for start in range(0, len(keys), CHUNK_KEYS)
                )
                await self._write_chunks(client, whole, stream_s, lambda chunk: None)
                log.info(
                    "Redis mirror: partitions %s written whole (%d customer-buckets, %.1fs)",
                    sorted(pending),
                    len(keys),
                    time.monotonic() - began,
                )

            # Step 4. What changed since the last flush; a chunk written is not written again.
            def written(chunk: dict[BucketKey, Change]) -> None:
                for key in chunk:
                    del staged[key]

            await self._write_chunks(client, _chunks(dict(staged)), stream_s, written)
        except BaseException:
            revoked = self._revoked
            kept = {k: v for k, v in staged.items() if k.partition not in revoked}
            for key, change in self._staged.items():  # keep what failed, merged with what came since
                kept[key] = _merge(kept.get(key), change)
            self._staged = kept
            raise
        # Step 5. Every write succeeded: the watermarks may say so.
        await self._write_progress(
            client, epoch, {p: marks[p] for p in marks if p not in self._revoked}, ingested_ms
        )
        self.whole |= pending - self._revoked
        async with self._flush_written:
            self._written = number
            self._flush_written.notify_all()

    async def _epoch(self, client: Client, keys: list[str]) -> str:
        """The mirror's epoch, each of its keys created here if missing (Redis, or one of its
        shards, is new or lost its data): ``breakout.redis_layout.joined_epoch``."""
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, uuid.uuid4().hex, nx=True)
        for key in keys:
            pipe.get(key)
        epoch = joined_epoch((await pipe.execute())[len(keys) :])
        if epoch is None:
            raise RedisError("an epoch key vanished as it was created (Redis emptied again)")
        return epoch

    async def _write_chunks(
        self,
        client: Client,
        chunks: Iterator[dict[BucketKey, Change]],
        stream_s: int,
        written: Callable[[dict[BucketKey, Change]], None],
    ) -> None:
        """Each chunk's buckets (``_send``), ``CHUNKS_IN_FLIGHT`` chunks on their way at once;
        ``written`` is called with each chunk Redis took whole. A failure cancels the chunks
        still on their way and is raised: those, like the failed one, are not ``written``
        (kept for the next flush), and writing one again that Redis did take is harmless."""
        sending: deque[tuple[asyncio.Future[set[Refused]], dict[BucketKey, Change]]] = deque()

        async def settle_oldest() -> None:
            future, chunk = sending.popleft()
            self._after_write(await future, chunk)
            written(chunk)

        try:
            for chunk in chunks:
                began = time.perf_counter()
                writes = self._encode(chunk, stream_s)
                self._busy += time.perf_counter() - began
                sending.append((asyncio.ensure_future(self._send(client, writes)), chunk))
                if len(sending) < CHUNKS_IN_FLIGHT:
                    await asyncio.sleep(0)  # let it go out before the next is built
                else:
                    await settle_oldest()
            while sending:
                await settle_oldest()
        except BaseException:
            for future, _ in sending:
                future.cancel()
            await asyncio.gather(*(future for future, _ in sending), return_exceptions=True)
            raise

    def _encode(self, changes: dict[BucketKey, Change], stream_s: int) -> list[BucketChanges]:
        """A chunk's changes as a few transactions per bucket, each with its keys' expiry.

        A bucket's customers share transactions, ``WATCHED`` at a time (live traffic changes
        a few buckets, each for many customers), so each destination hash gets a write per
        part of a bucket, not per customer. The fields
        and values are encoded here, at once: the agent changes buckets in place, so what is
        sent is their state of this moment (``streams.bucket_writes.EncodedBucket``).
        """
        by_bucket: dict[tuple[Granularity, int], BucketWrite] = {}
        staged_since = self._staged
        for key, (bucket, changed) in changes.items():
            write = by_bucket.get((key.granularity, key.start))
            if write is None:
                write = by_bucket[(key.granularity, key.start)] = BucketWrite()
            if bucket is None:
                write.delete(key.customer)
                continue
            if changed is not None and (since := staged_since.get(key)) is not None:
                # The agent changes a bucket in place, so what is written is its value now,
                # with the @applied of now: the rows it changed since this change was taken
                # (staged again meanwhile) go too, or Redis would hold them older under that
                # @applied, which readers take to mean the same rows (docs/redis-layout.md).
                # Staged as another object (the agent's cache was cleared), it is all rows.
                changed = None if since[1] is None or since[0] is not bucket else changed | since[1]
            write.add(key.customer, bucket, bucket.rows if changed is None else changed)
        return [
            (g, start, max(1, self.retention.expires_at(g, start) - stream_s), part)
            for (g, start), write in by_bucket.items()
            for part in write.encode(self._rows)
        ]

    async def _send(self, client: Client, writes: list[BucketChanges]) -> set[Refused]:
        """Each transaction, ``BUCKETS_IN_FLIGHT`` at once, then the bucket index
        (another slot's key); the customer-buckets Redis refused as older than it holds."""
        limit = asyncio.Semaphore(BUCKETS_IN_FLIGHT)

        async def one(granularity: Granularity, start: int, ttl: int, bucket: EncodedBucket) -> list[Refused]:
            async with limit:
                refused = await write_bucket(client, self.layout, granularity, start, ttl, bucket)
            return [(granularity, start, customer) for customer in refused]

        tasks = [asyncio.ensure_future(one(*write)) for write in writes]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        pipe = client.pipeline(transaction=False)
        for granularity, start in {(g, start) for g, start, _, bucket in writes if bucket.customers}:
            pipe.zadd(self.layout.buckets(granularity), {str(start): start})
        if len(pipe):
            await pipe.execute()
        return {refused for result in results for refused in result}

    def _after_write(self, refused: set[Refused], changes: dict[BucketKey, Change]) -> None:
        """Note the customer-buckets whose write Redis refused (``_after_refusal``)."""
        if refused:
            for key in changes:
                if (key.granularity, key.start, key.customer) in refused:
                    self._after_refusal(key)

    def _after_refusal(self, key: BucketKey) -> None:
        """Make the next write of ``key`` carry every row, whether staged already or not.

        Redis holds a newer value than the refused one, whose changed rows may be newer
        than Redis's: a later write of the changed rows alone would leave those stale
        under a newer ``@applied``. That includes a change the agent staged while the
        refused write was on its way, so it is widened here too. Readers rely on it: two
        writes of a customer-bucket with the same ``@applied`` hold the same rows.
        """
        if key.partition in self._revoked:
            return  # written again whole if it comes back
        staged = self._staged.get(key)
        if staged is None:
            self._needs_full.add(key)
        else:
            self._staged[key] = (staged[0], None)

    async def _write_progress(
        self, client: Client, epoch: str, marks: dict[int, tuple[int, int]], ingested_ms: int | None
    ) -> None:
        pipe = client.pipeline(transaction=False)
        if marks:
            now = int(time.time() * 1000)
            pipe.hset(
                self.layout.watermarks,
                mapping={
                    str(p): Watermark(ms, offset, now, epoch, ingested_ms).encode()
                    for p, (ms, offset) in marks.items()
                },
            )
        if self.counters:
            # This process's totals since it started: rejected CDRs by reason, duplicates.
            counters_key = self.layout.counters(self.worker)
            counts: dict[FieldT, EncodableT] = dict(self.counters.items())
            pipe.hset(counters_key, mapping=counts)
            pipe.expire(counters_key, COUNTERS_TTL_SECONDS)
        await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
