"""Mirrors changed customer-buckets to Redis, in pipelined batches, as absolute values.

The agent only stages what changed (``stage``), in memory and coalesced per key, so
aggregation never waits for Redis; ``run`` flushes the staged set every
``FLUSH_SECONDS`` in one pipeline, and when Redis is unreachable keeps it (newer
values replacing older ones) and retries, so the mirror catches up when Redis returns.
Writing absolute values (never HINCRBY) makes a repeated flush harmless.
See ``docs/redis-layout.md`` for the keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT, FieldT

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, RowId

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
COUNTERS_TTL_SECONDS = 7 * 86400
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


# A staged change: the bucket's live value (None: deleted) and the rows to write (None: all).
Change = tuple[CustomerBucket | None, set[RowId] | None]


def _merge(older: Change | None, newer: Change) -> Change:
    """Two changes of one key as one: the newer value, the union of the rows to write."""
    bucket, rows = newer
    if older is None or bucket is None or rows is None:
        return newer
    older_rows = older[1]
    return (bucket, None if older[0] is None or older_rows is None else older_rows | rows)


def customer_key(app_id: str, key: BucketKey) -> str:
    return f"{app_id}:rows:{key.granularity.value}:{key.start}:c:{key.customer}"


def destination_key(app_id: str, key: BucketKey, destination: str) -> str:
    return f"{app_id}:rows:{key.granularity.value}:{key.start}:d:{destination}"


def version_key(app_id: str, granularity: Granularity, start: int) -> str:
    return f"{app_id}:version:{granularity.value}:{start}"


def index_key(app_id: str, key: BucketKey, kind: str) -> str:
    return f"{app_id}:idx:{key.granularity.value}:{key.start}:{kind}"


class RedisMirror:
    """Staged changes waiting for Redis, and the loop that writes them."""

    def __init__(self, url: str, app_id: str, retention: Retention, counters: Counter[str]) -> None:
        self.url = url
        self.app_id = app_id
        self.retention = retention
        self.counters = counters
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self._staged: dict[BucketKey, Change] = {}
        self._watermarks: dict[int, tuple[int, int]] = {}
        self._script_sha: str | None = None
        # Buckets whose last write Redis refused as older than what it holds: the next write
        # of each must carry all its rows, or rows changed meanwhile could be left out.
        self._needs_full: set[BucketKey] = set()
        # Called when Redis turns out to have lost its data (restarted empty, flushed):
        # the owner of the state stages every row again.
        self.on_reset: Callable[[], None] = lambda: None

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None:
        """Remember ``key``'s latest value (None: deleted) and which rows changed (None: all)."""
        if key in self._needs_full:
            self._needs_full.discard(key)
            rows = None
        self._staged[key] = _merge(self._staged.get(key), (bucket, rows))

    def stage_watermark(self, partition: int, stream_ms: int, offset: int) -> None:
        self._watermarks[partition] = (stream_ms, offset)

    async def run(self) -> None:
        client = aioredis.from_url(self.url)
        failures = 0
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if not self._staged and not self._watermarks:
                    continue
                staged, self._staged = self._staged, {}
                watermarks, self._watermarks = self._watermarks, {}
                try:
                    await self._write(client, staged, watermarks)
                except (RedisError, OSError) as exc:
                    # Keep what failed, merged with what was staged meanwhile.
                    for key, change in self._staged.items():
                        staged[key] = _merge(staged.get(key), change)
                    self._staged = staged
                    self._watermarks = watermarks | self._watermarks
                    delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                    failures += 1
                    log.warning(
                        "Redis mirror: %s; %d keys kept, retrying in %.1fs", exc, len(self._staged), delay
                    )
                    await asyncio.sleep(delay)
                else:
                    if failures:
                        log.info("Redis mirror: caught up after %d failed flushes", failures)
                    failures = 0
        finally:
            await client.aclose()

    async def _write(
        self,
        client: aioredis.Redis,
        staged: dict[BucketKey, Change],
        watermarks: dict[int, tuple[int, int]],
    ) -> None:
        app_id = self.app_id
        stream_s = max((ms for ms, _ in watermarks.values()), default=int(time.time() * 1000)) // 1000
        if self._script_sha is None:
            self._script_sha = await client.script_load(WRITE_BUCKET)
        pipe = client.pipeline(transaction=False)
        # A marker that only disappears with Redis's data: if SET NX succeeds, Redis is new.
        pipe.set(f"{app_id}:mirror", uuid.uuid4().hex, nx=True)
        scripted: list[tuple[int, BucketKey]] = []
        changed_buckets: set[tuple[Granularity, int]] = set()
        for key, (bucket, changed) in staged.items():
            changed_buckets.add((key.granularity, key.start))
            if bucket is None:
                pipe.delete(customer_key(app_id, key))
                pipe.srem(index_key(app_id, key, "customers"), key.customer)
                continue
            ttl = max(1, self.retention.expires_at(key.granularity, key.start) - stream_s)
            row_ids = list(bucket.rows) if changed is None else list(changed)
            # Two JSON arguments per bucket (packing a command costs per argument, not per
            # byte), built in C: the row ids, which are JSON text already, and their counters.
            ids = "[" + ",".join(row_ids) + "]"
            counters = orjson.dumps([bucket.rows[r] for r in row_ids])
            scripted.append((len(pipe), key))
            pipe.evalsha(
                self._script_sha,
                4,
                customer_key(app_id, key),
                index_key(app_id, key, "customers"),
                index_key(app_id, key, "destinations"),
                f"{app_id}:buckets:{key.granularity.value}",
                bucket.applied,
                ttl,
                key.customer,
                key.start,
                destination_key(app_id, key, ""),
                ids,
                counters,
            )
        for granularity, start in changed_buckets:
            # Readers cache a bucket's rows until its version moves (see docs/redis-layout.md).
            version = version_key(app_id, granularity, start)
            pipe.incr(version)
            pipe.expire(version, max(1, self.retention.expires_at(granularity, start) - stream_s))
        if self.counters:
            # This process's totals since it started: rejected CDRs by reason, duplicates.
            counters_key = f"{app_id}:counters:{self.worker}"
            counts: dict[FieldT, EncodableT] = dict(self.counters.items())
            pipe.hset(counters_key, mapping=counts)
            pipe.expire(counters_key, COUNTERS_TTL_SECONDS)
        if watermarks:
            now = int(time.time() * 1000)
            pipe.hset(
                f"{app_id}:watermark",
                mapping={
                    str(p): orjson.dumps({"event_ms": ms, "offset": offset, "written_ms": now})
                    for p, (ms, offset) in watermarks.items()
                },
            )
        try:
            results = await pipe.execute()
        except NoScriptError:
            self._script_sha = None  # Redis restarted empty: load the script again next time
            raise
        self._needs_full.update(key for index, key in scripted if results[index] == 0)
        if results[0]:
            log.info("Redis mirror: Redis holds none of our data; writing every row again")
            self.on_reset()


# Writes one customer-bucket unless Redis already holds a newer one (returns 0 then): after a
# rebalance the worker that lost a partition may still be flushing older values of it. An
# equal offset is written: both workers computed the same state from the same messages.
# KEYS: customer hash, customers index, destinations index, buckets zset.
# ARGV: applied offset, ttl, customer, bucket start, destination-hash key prefix, a JSON array
# of row ids [destination, provider, currency] and a JSON array of their counters. Counters are
# cut out of that text as they are, never decoded: Lua numbers would round integers past 2^53,
# and cjson prints only 14 digits. Counters are never negative, so each is a run of digits
# and commas in brackets.
# Fields are written with one HSET per hash (in chunks: unpack has a stack limit), because
# each redis.call costs more than the field it writes.
# The destination hashes are named from the prefix, so this assumes one Redis, not a cluster.
WRITE_BUCKET = """
local applied = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], '@applied') or '-1')
if current > applied then return 0 end
local ttl = tonumber(ARGV[2])
local customer = ARGV[3]
local function hset(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HSET', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local by_customer = {'@applied', applied}
local by_destination = {}
local destinations = {}
local next_counters = string.gmatch(ARGV[7], '%[[%d,]+%]')
for _, row in ipairs(cjson.decode(ARGV[6])) do
  local destination, provider, currency = row[1], row[2], row[3]
  local counters = next_counters()
  by_customer[#by_customer + 1] = cjson.encode({destination, provider, currency})
  by_customer[#by_customer + 1] = counters
  local fields = by_destination[destination]
  if not fields then
    fields = {}
    by_destination[destination] = fields
    destinations[#destinations + 1] = destination
  end
  fields[#fields + 1] = cjson.encode({customer, provider, currency})
  fields[#fields + 1] = counters
end
hset(KEYS[1], by_customer)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[2], customer)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[4])
for _, destination in ipairs(destinations) do
  local destination_key = ARGV[5] .. destination
  hset(destination_key, by_destination[destination])
  redis.call('EXPIRE', destination_key, ttl)
end
for i = 1, #destinations, 1000 do
  redis.call('SADD', KEYS[3], unpack(destinations, i, math.min(i + 999, #destinations)))
end
redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""
