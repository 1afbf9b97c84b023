"""The mirror against a real Redis: exact counters, any names, large buckets, repair after data loss."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, row_id
from breakout.redis_client import Client, connect, is_cluster
from breakout.redis_layout import Completeness, Layout, completeness, decode_watermarks, encode_row_field
from breakout.settings import Settings
from streams import bucket_writes
from streams.mirror import RedisMirror
from tests.integration.handmade import current_epoch, set_epoch

pytestmark = [pytest.mark.integration, pytest.mark.each_redis]

START = 1_795_597_200


class Unowned:
    """A worker that owns no partition: the mirror writes only what was staged."""

    def __init__(self, stream_ms: int) -> None:
        self.stream_ms = stream_ms

    def owned(self) -> set[int]:
        return set()

    def bucket_keys(self, partitions: set[int]) -> list[BucketKey]:
        return []

    def value(self, key: BucketKey) -> CustomerBucket | None:
        return None

    def watermark(self, partition: int) -> tuple[int, int]:
        return self.stream_ms, 0


HUGE = 2**62 + 1  # past 2^53: a Lua number would round it


async def test_write_keeps_counters_exact_and_names_as_given(settings: Settings) -> None:
    app = settings.app_id
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    layout = Layout(app)
    key = BucketKey(0, Granularity.HOUR, START, 'cust/1 "é"')
    odd = ('Caf\u00e9 "q" \\ / x', "p/1", "EUR")
    rows = {row_id(*odd): [1, 1, 60_000, HUGE, HUGE + 2, 0, 1]}
    # More rows than one HSET takes in the script (it writes them in chunks).
    rows |= {row_id(f"d{i % 7}", f"p{i}", "USD"): [i, 0, 0, i, i, 0, 0] for i in range(1_200)}
    mirror.stage(key, CustomerBucket(5, rows), None)
    client = connect(settings.redis)
    try:
        await mirror.flush(client, Unowned(START * 1000))
        by_customer = await client.hgetall(layout.customer_rows(Granularity.HOUR, START, key.customer))
        by_destination = await client.hgetall(layout.destination_rows(Granularity.HOUR, START, odd[0]))
        destinations = await client.smembers(layout.destinations(Granularity.HOUR, START))
    finally:
        await client.aclose()
    assert by_customer.pop(b"@applied") == b"5"
    assert {tuple(orjson.loads(f)): v for f, v in by_customer.items()} == {
        tuple(orjson.loads(r)): orjson.dumps(c) for r, c in rows.items()
    }
    assert {tuple(orjson.loads(f)): v for f, v in by_destination.items()} == {
        (key.customer, "p/1", "EUR"): b"[1,1,60000,%d,%d,0,1]" % (HUGE, HUGE + 2)
    }
    assert destinations == {odd[0].encode(), *(f"d{i}".encode() for i in range(7))}


async def test_settle_returns_once_what_was_staged_before_it_is_in_redis(settings: Settings) -> None:
    """A planned stop waits for this (``streams.agents``): a flush cut off part-way would
    leave Redis with some buckets newer than the watermarks say and others not."""
    app = settings.app_id
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    layout = Layout(app)
    stop = False
    running = asyncio.create_task(mirror.run(Unowned(START * 1000), lambda: stop))
    client = connect(settings.redis)
    try:
        for applied in (1, 2, 3):  # each staged while the loop flushes or waits for its next
            keys = [BucketKey(0, g, START // g.seconds * g.seconds, "cust-settle") for g in Granularity]
            for key in keys:
                mirror.stage(key, CustomerBucket(applied, {row_id("UK", "p1", "EUR"): [applied] * 7}), None)
            await asyncio.wait_for(mirror.settle(), 10)
            held = [
                await client.hget(layout.customer_rows(k.granularity, k.start, k.customer), "@applied")
                for k in keys
            ]
            assert held == [str(applied).encode()] * len(keys)
            await asyncio.sleep(0.2 * applied)
    finally:
        stop = True
        await asyncio.wait_for(running, 10)
        await client.aclose()


class Owner(Unowned):
    """A worker owning partitions 0 and 1, each with one customer's three buckets."""

    def __init__(self) -> None:
        super().__init__(START * 1000)
        self.buckets = {
            BucketKey(p, g, START // g.seconds * g.seconds, f"cust-{p}"): CustomerBucket(
                7, {row_id("UK", "p1", "EUR"): [3, 2, 60_000, 10, 15, 0, 0]}
            )
            for p in (0, 1)
            for g in Granularity
        }

    def owned(self) -> set[int]:
        return {0, 1}

    def bucket_keys(self, partitions: set[int]) -> list[BucketKey]:
        return sorted(k for k in self.buckets if k.partition in partitions)

    def value(self, key: BucketKey) -> CustomerBucket | None:
        return self.buckets.get(key)

    def watermark(self, partition: int) -> tuple[int, int]:
        return self.stream_ms, 7


async def _state(client: Client, layout: Layout) -> tuple[Completeness, int]:
    marker = await current_epoch(client, layout)
    marks = decode_watermarks(await client.hgetall(layout.watermarks))
    rows = [key async for key in client.scan_iter(match=layout.customer_rows_pattern)]
    return completeness(marker, marks, 2), len(rows)


async def test_every_owned_partition_is_written_whole_again_after_redis_loses_its_data(
    settings: Settings,
) -> None:
    layout = Layout(settings.app_id)
    # A database of its own: this test empties it (a cluster has one database: all of it).
    url = settings.redis if is_cluster(settings.redis) else settings.redis.rsplit("/", 1)[0] + "/7"
    mirror = RedisMirror(url, settings.app_id, Retention(172_800, 3_024_000, 34_560_000), Counter())
    owner = Owner()
    client = connect(url)
    try:
        await mirror.flush(client, owner)  # assigned: written whole without any new CDR
        first, rows = await _state(client, layout)
        assert first.complete and rows == 6
        await mirror.flush(client, owner)
        assert (await _state(client, layout))[0] == first  # same epoch: nothing to repair
        for lose in (client.flushdb, client.script_flush, client.flushdb):
            await lose()
            await mirror.flush(client, owner)
            again, rows = await _state(client, layout)
            assert again.complete and rows == 6
        assert again.epoch != first.epoch
        # Watermarks of another epoch (a write that raced a restart) are not whole.
        await set_epoch(client, layout, "someone-else")
        assert (await _state(client, layout))[0].missing == (0, 1)
        await mirror.flush(client, owner)
        assert (await _state(client, layout))[0].complete
    finally:
        await client.flushdb()
        await client.aclose()


async def test_after_redis_loses_its_data_every_key_written_again_expires(settings: Settings) -> None:
    """The mirror leaves out a key's EXPIRE when Redis says its TTL lasts. A write racing
    Redis emptying can leave a key without one (Redis emptied between that read and the
    transaction); the new epoch then has every key written again, and each one must come
    back with its TTL, that stray key included."""
    layout = Layout(settings.app_id)
    url = settings.redis if is_cluster(settings.redis) else settings.redis.rsplit("/", 1)[0] + "/7"
    mirror = RedisMirror(url, settings.app_id, Retention(172_800, 3_024_000, 34_560_000), Counter())
    owner = Owner()
    stray = layout.destination_rows(Granularity.HOUR, START // 3600 * 3600, "UK")
    client = connect(url)
    try:
        await mirror.flush(client, owner)
        await client.flushdb()
        await client.hset(stray, "stray", "[1]")  # no TTL, as a racing write would leave it
        await mirror.flush(client, owner)
        tags = {layout.bucket_tag(k.granularity, k.start) for k in owner.buckets}
        keys = [key for tag in tags async for key in client.scan_iter(match=tag + "*")]
        ttls = {key: await client.ttl(key) for key in keys}
    finally:
        await client.flushdb()
        await client.aclose()
    assert stray.encode() in ttls
    assert len(ttls) == 3 * 6  # per bucket: two customer hashes, a destination's, two index sets, a version
    assert all(ttl > 0 for ttl in ttls.values()), ttls


async def test_a_cluster_shard_that_restarts_empty_is_a_new_epoch_and_written_whole_again(
    settings: Settings,
) -> None:
    """One shard of a Redis Cluster loses its data while the others (the marker's among them)
    keep theirs: readers must not take what is left for a whole mirror, and the workers must
    write every row again, as after a single Redis restarted empty."""
    if not is_cluster(settings.redis):
        pytest.skip("a single Redis has no shards")
    layout = Layout(settings.app_id)
    mirror = RedisMirror(
        settings.redis, settings.app_id, Retention(172_800, 3_024_000, 34_560_000), Counter()
    )
    owner = Owner()
    client = connect(settings.redis)
    assert isinstance(client, RedisCluster)

    def shard_of(key: str | bytes) -> str:
        node = client.get_node_from_key(key.decode() if isinstance(key, bytes) else key)
        assert node is not None
        return str(node.name)

    try:
        await mirror.flush(client, owner)
        first, rows = await _state(client, layout)
        assert first.complete and rows == 6
        shard = next(node for node in client.get_primaries() if node.name != shard_of(layout.marker))
        row_keys = [key async for key in client.scan_iter(match=layout.customer_rows_pattern)]
        lost = [key for key in row_keys if shard_of(key) == shard.name]
        await client.flushall(target_nodes=shard)  # as a restart without persistence
        emptied, rows = await _state(client, layout)
        assert not emptied.complete and emptied.epoch is None and rows == 6 - len(lost)
        await mirror.flush(client, owner)
        again, rows = await _state(client, layout)
        assert again.complete and rows == 6 and again.epoch != first.epoch
        assert first.epoch is not None and again.epoch is not None
        assert again.epoch.split(",")[0] == first.epoch.split(",")[0]  # the marker's shard kept it
    finally:
        await client.aclose()


NAMES = [
    "plain",
    "a/b",
    "del\x7fete",
    'q"uote',
    "back\\slash",
    "tab\tnl\n",
    "bell\x07",
    "é ü 中",
    "\U0001f600",
]


async def test_fields_are_spelled_as_redis_cjson_spells_them(settings: Settings) -> None:
    """The mirror once let the script's ``cjson.encode`` write row fields; it writes them
    itself now, and a field spelled otherwise would be a second copy of the same row."""
    client = connect(settings.redis)
    try:
        for name in NAMES:
            spelled = await client.eval(
                "return cjson.encode(cjson.decode(ARGV[1]))", 0, orjson.dumps([name, "p/1", "EUR"])
            )
            assert spelled.decode() == encode_row_field(name, "p/1", "EUR"), name
    finally:
        await client.aclose()


async def test_an_older_value_is_refused_and_none_of_its_rows_written(settings: Settings) -> None:
    """After a rebalance the worker that lost a partition may flush older values of it: Redis
    keeps the newer customer-bucket, in its customer hash and in the destination hashes,
    while the other customers of the same write are written."""
    app = settings.app_id
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    layout = Layout(app)
    newer, other = (BucketKey(0, Granularity.HOUR, START, c) for c in ("cust-newer", "cust-other"))
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    client = connect(settings.redis)
    try:
        held = layout.customer_rows(Granularity.HOUR, START, newer.customer)
        await client.hset(held, mapping={"@applied": 9, uk: "[9,9,9]"})
        mirror.stage(newer, CustomerBucket(5, {uk: [1, 1, 1], fr: [2, 2, 2]}), None)
        mirror.stage(other, CustomerBucket(5, {uk: [3, 3, 3]}), None)
        await mirror.flush(client, Unowned(START * 1000))
        kept = await client.hgetall(held)
        by_uk = await client.hgetall(layout.destination_rows(Granularity.HOUR, START, "UK"))
        fr_exists = await client.exists(layout.destination_rows(Granularity.HOUR, START, "FR"))
        customers = await client.smembers(layout.customers(Granularity.HOUR, START))
    finally:
        await client.aclose()
    assert kept == {b"@applied": b"9", uk.encode(): b"[9,9,9]"}
    assert by_uk == {encode_row_field("cust-other", "p1", "EUR").encode(): b"[3,3,3]"}
    assert not fr_exists
    assert customers == {b"cust-other"}
    # Its next write carries every row: rows changed meanwhile cannot be left out.
    mirror.stage(newer, CustomerBucket(11, {uk: [4, 4, 4], fr: [2, 2, 2]}), {uk})
    assert mirror._staged[newer] == (CustomerBucket(11, {uk: [4, 4, 4], fr: [2, 2, 2]}), None)


async def test_a_change_staged_while_its_older_value_was_refused_is_written_whole(
    settings: Settings,
) -> None:
    """A change the agent stages while the write of the key's older value is on its way
    carries only its own rows; once that write is refused, it must carry every row, or the
    rows changed before it would stay at Redis's older value under its newer ``@applied``."""
    app = settings.app_id
    reached = asyncio.Event()  # the flush reads how far ingest got right before it takes the staged
    mirror = RedisMirror(
        settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter(), ingested=reached.set
    )
    layout = Layout(app)
    key = BucketKey(0, Granularity.HOUR, START, "cust-raced")
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    client = connect(settings.redis)
    try:
        held = layout.customer_rows(Granularity.HOUR, START, key.customer)
        await client.hset(held, mapping={"@applied": 9, uk: "[9,9,9]"})  # another worker's, newer
        mirror.stage(key, CustomerBucket(5, {uk: [5, 5, 5], fr: [2, 2, 2]}), {uk, fr})
        flushing = asyncio.ensure_future(mirror.flush(client, Unowned(START * 1000)))
        await reached.wait()  # resumed once the flush waits for Redis, after taking the staged
        assert not mirror._staged
        mirror.stage(key, CustomerBucket(11, {uk: [6, 6, 6], fr: [2, 2, 2]}), {uk})
        await flushing
        assert await client.hgetall(held) == {b"@applied": b"9", uk.encode(): b"[9,9,9]"}  # refused
        await mirror.flush(client, Unowned(START * 1000))
        written = await client.hgetall(held)
    finally:
        await client.aclose()
    assert written == {b"@applied": b"11", uk.encode(): b"[6,6,6]", fr.encode(): b"[2,2,2]"}


async def test_a_partition_revoked_and_assigned_again_is_written_whole_without_its_old_changes(
    settings: Settings,
) -> None:
    """A partition that leaves and comes back between two flushes is replayed from its
    tables: what was staged before it left is of another run of the same messages and is
    dropped, not merged with the new run's changes, and the partition is written whole, as
    on any assignment (the previous owner may have applied more than it mirrored)."""
    layout = Layout(settings.app_id)
    mirror = RedisMirror(
        settings.redis, settings.app_id, Retention(172_800, 3_024_000, 34_560_000), Counter()
    )
    owner = Owner()
    key = next(k for k in owner.buckets if k.partition == 0 and k.granularity == Granularity.DAY)
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    client = connect(settings.redis)
    try:
        await mirror.flush(client, owner)  # both partitions assigned: written whole
        # Before the revocation: a change with a row the replay has not reached yet.
        mirror.stage(
            key, CustomerBucket(9, {uk: [3, 2, 60_000, 10, 15, 0, 0], fr: [1, 1, 1, 1, 1, 0, 0]}), {fr}
        )
        mirror.forget(0)
        # Assigned again, restored from the tables (applied 7) and replayed: no FR row yet.
        hour = next(k for k in owner.buckets if k.partition == 0 and k.granularity == Granularity.HOUR)
        unchanged = layout.customer_rows(hour.granularity, hour.start, "cust-0")
        await client.delete(unchanged)  # what only a whole write puts back
        mirror.stage(key, CustomerBucket(8, {uk: [4, 3, 60_000, 11, 16, 0, 0]}), {uk})
        await mirror.flush(client, owner)
        written = await client.hgetall(layout.customer_rows(key.granularity, key.start, "cust-0"))
        hour_rows = await client.hgetall(unchanged)
    finally:
        await client.aclose()
    assert written == {b"@applied": b"8", uk.encode(): b"[4,3,60000,11,16,0,0]"}
    assert hour_rows == {b"@applied": b"7", uk.encode(): b"[3,2,60000,10,15,0,0]"}


async def test_a_bucket_changed_after_its_change_was_taken_is_written_with_every_row_changed_since(
    settings: Settings,
) -> None:
    """The agent changes a customer-bucket in place, and the mirror writes the bucket as it
    is when the write is built, @applied included: a flush that takes a change and awaits
    Redis before writing it (other writes first) writes a newer @applied than that change.
    The rows changed since must go with it, or Redis would hold them older under that
    @applied, and a reader that cached them would never read them again."""
    reached = asyncio.Event()  # the flush reads how far ingest got right before it takes the staged
    mirror = RedisMirror(
        settings.redis,
        settings.app_id,
        Retention(172_800, 3_024_000, 34_560_000),
        Counter(),
        ingested=reached.set,
    )
    layout = Layout(settings.app_id)
    key = BucketKey(5, Granularity.HOUR, START, "cust-live")
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    bucket = CustomerBucket(4, {uk: [4, 4, 4], fr: [2, 2, 2]})
    client = connect(settings.redis)
    try:
        mirror.stage(key, bucket, None)
        await mirror.flush(client, Unowned(START * 1000))
        bucket.rows[uk], bucket.applied = [5, 5, 5], 5
        mirror.stage(key, bucket, {uk})
        reached.clear()
        # Partitions 0 and 1 are written whole first: the agent runs while that awaits Redis.
        flushing = asyncio.ensure_future(mirror.flush(client, Owner()))
        await reached.wait()
        bucket.rows[fr], bucket.applied = [6, 6, 6], 6
        mirror.stage(key, bucket, {fr})
        await flushing
        written = await client.hgetall(layout.customer_rows(key.granularity, key.start, key.customer))
    finally:
        await client.aclose()
    assert written == {b"@applied": b"6", uk.encode(): b"[5,5,5]", fr.encode(): b"[6,6,6]"}


async def test_a_chunk_redis_fails_is_kept_and_the_chunks_written_before_it_are_not(
    settings: Settings,
) -> None:
    """A flush writes in chunks, two on their way at once. When Redis fails one (here a
    customer hash that is not a hash), the chunks it answered before stay written and are
    not staged again, the failed one and any cut off after it are kept, no watermark is
    written, and the next flush writes what was kept: every row exact."""
    app = settings.app_id
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    layout = Layout(app)
    keys = [BucketKey(0, Granularity.HOUR, START, f"cust-{n:04}") for n in range(2_500)]
    rows = {key: {row_id("UK", "p1", "EUR"): [n, n, n]} for n, key in enumerate(keys)}
    for key in keys:
        mirror.stage(key, CustomerBucket(3, rows[key]), None)
    broken = layout.customer_rows(Granularity.HOUR, START, keys[1_500].customer)  # the 2nd chunk
    client = connect(settings.redis)
    try:
        await client.set(broken, "not a hash")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await mirror.flush(client, Owner())
        kept = set(mirror._staged)
        assert not await client.exists(layout.watermarks)
        await client.delete(broken)
        await mirror.flush(client, Owner())
        written = {
            key: await client.hgetall(layout.customer_rows(key.granularity, key.start, key.customer))
            for key in keys
        }
    finally:
        await client.aclose()
    assert set(keys[1_000:2_000]) <= kept
    assert not kept & set(keys[:1_000])
    for key in keys:
        assert written[key] == {
            b"@applied": b"3",
            **{row.encode(): orjson.dumps(counters) for row, counters in rows[key].items()},
        }, key


async def test_a_customer_hash_changed_between_the_read_and_the_write_is_read_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker (one that gained or lost the partition) writes a customer hash after
    this write read its ``@applied`` and before its ``EXEC``: the watched hash makes the
    transaction not run, and the write starts again, reading the newer value and leaving
    that customer out, while the bucket's other customers are written."""
    app = settings.app_id
    layout = Layout(app)
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    raced, other = (BucketKey(0, Granularity.HOUR, START, c) for c in ("cust-raced", "cust-calm"))
    uk = row_id("UK", "p1", "EUR")
    held = layout.customer_rows(Granularity.HOUR, START, raced.customer)
    built = bucket_writes._transaction
    calls = 0

    def other_worker_writes() -> None:
        async def write() -> None:
            client = connect(settings.redis)
            try:
                await client.hset(held, mapping={"@applied": 9, uk: "[9,9,9]"})
            finally:
                await client.aclose()

        asyncio.run(write())  # its own loop and connection: the write lands before EXEC is sent

    def racing(*args: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            thread = threading.Thread(target=other_worker_writes)
            thread.start()
            thread.join()
        return built(*args)

    monkeypatch.setattr(bucket_writes, "_transaction", racing)
    mirror.stage(raced, CustomerBucket(5, {uk: [1, 1, 1]}), None)
    mirror.stage(other, CustomerBucket(5, {uk: [3, 3, 3]}), None)
    client = connect(settings.redis)
    try:
        await mirror.flush(client, Unowned(START * 1000))
        kept = await client.hgetall(held)
        calm = await client.hgetall(layout.customer_rows(Granularity.HOUR, START, other.customer))
        by_uk = await client.hgetall(layout.destination_rows(Granularity.HOUR, START, "UK"))
        leftovers = [k async for k in client.scan_iter(match=layout.written(Granularity.HOUR, START, "*"))]
    finally:
        await client.aclose()
    assert calls == 2
    assert kept == {b"@applied": b"9", uk.encode(): b"[9,9,9]"}
    assert calm == {b"@applied": b"5", uk.encode(): b"[3,3,3]"}
    assert by_uk == {encode_row_field("cust-calm", "p1", "EUR").encode(): b"[3,3,3]"}
    assert mirror._needs_full == {raced}
    assert not leftovers


async def test_a_transaction_redis_refuses_is_tried_again_then_fails(settings: Settings) -> None:
    """Redis out of memory refuses a transaction's writes as they are queued, so ``EXEC``
    runs nothing, unseen with replies off: the write is read and tried again, then fails
    (the mirror keeps the changes of a failed flush, as for any Redis error), never taken
    as written."""
    layout = Layout(settings.app_id)
    uk = row_id("UK", "p1", "EUR")
    write = bucket_writes.BucketWrite()
    write.add("cust-oom", CustomerBucket(5, {uk: [1, 1, 1]}), [uk])
    [part] = write.encode(bucket_writes.RowFields())
    client = connect(settings.redis)
    try:
        await _set_maxmemory(client, "1")
        try:
            with pytest.raises(RedisError, match="not written after 5 attempts"):
                await bucket_writes.write_bucket(client, layout, Granularity.HOUR, START, 60, part)
        finally:
            await _set_maxmemory(client, "0")
        written = await client.exists(layout.customer_rows(Granularity.HOUR, START, "cust-oom"))
    finally:
        await client.aclose()
    assert not written


class Behind(Unowned):
    """A worker owning partition 0, whose stream time is ``stream_ms``: its keys' expiry
    is reckoned from it (the mirror's stream time is the clock's when it owns none)."""

    def owned(self) -> set[int]:
        return {0}


async def test_every_key_written_expires_with_its_bucket_and_an_expiry_kept_is_never_shorter(
    settings: Settings,
) -> None:
    """Every key of a bucket's write expires when the bucket leaves retention (as the
    worker's stream time reckons it). The mirror sets an expiry only where a key has none,
    or less than the write's (less a minute's slack): a key that lost its expiry, or is
    about to expire, gets it again; one with a longer expiry keeps it; a worker further
    behind the clock lengthens them all."""
    app = settings.app_id
    layout = Layout(app)
    retention = Retention(172_800, 3_024_000, 34_560_000)
    mirror = RedisMirror(settings.redis, app, retention, Counter())
    g = Granularity.HOUR
    key = BucketKey(0, g, START, "cust-ttl")
    uk = row_id("UK", "p1", "EUR")
    wanted = retention.expires_at(g, START) - START  # seconds, at stream time START
    customer = layout.customer_rows(g, START, key.customer)
    destination = layout.destination_rows(g, START, "UK")
    customers, destinations, version = (
        layout.customers(g, START),
        layout.destinations(g, START),
        layout.version(g, START),
    )
    client = connect(settings.redis)

    async def ttls() -> dict[str, int]:
        return {k: await client.ttl(k) for k in (customer, destination, customers, destinations, version)}

    try:
        mirror.stage(key, CustomerBucket(5, {uk: [1, 1, 1]}), None)
        await mirror.flush(client, Behind(START * 1000))
        first = await ttls()
        await client.persist(customer)  # lost its expiry
        await client.expire(destination, 30)  # about to expire
        await client.expire(customers, wanted + 1_000)  # longer than the write's
        mirror.stage(key, CustomerBucket(6, {uk: [2, 2, 2]}), None)
        await mirror.flush(client, Behind(START * 1000))
        second = await ttls()
        mirror.stage(key, CustomerBucket(7, {uk: [3, 3, 3]}), None)
        await mirror.flush(client, Behind((START - 3_600) * 1000))  # an hour further behind
        third = await ttls()
    finally:
        await client.aclose()
    assert all(wanted - 10 <= ttl <= wanted for ttl in first.values()), first
    assert wanted - 10 <= second[customer] <= wanted
    assert wanted - 10 <= second[destination] <= wanted
    assert wanted + 990 <= second[customers] <= wanted + 1_000
    assert all(wanted - 10 <= second[k] <= wanted for k in (destinations, version)), second
    assert all(wanted + 3_590 <= ttl <= wanted + 3_600 for ttl in third.values()), third


async def _set_maxmemory(client: Client, value: str) -> None:
    if isinstance(client, RedisCluster):
        await client.config_set("maxmemory", value, target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.config_set("maxmemory", value)
