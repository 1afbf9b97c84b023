"""Redis CPU per CDR of the mirror's bucket writes, against the script of issue 15's filing.

    .venv/bin/python bench/mirror_writes.py [--runs 3] [--flushes 30] [--per-flush 6000]

Starts Redis through scripts/redis.sh (or uses BREAKOUT_REDIS: it writes keys under an app
id of its own there, and deletes them after each run). Each run writes ``--flushes``
live-like flushes, each the changes of ``--per-flush`` CDRs (1,000 customers, each calling
its own 30 of 64 destinations through 3 of 4 providers, as in bench/ingest.py; every CDR
changes one row in the minute, hour and day buckets), in each of the ways below, and prints
Redis's CPU per CDR (``INFO cpu`` before and after), against the first's:

* ``when filed``: the mirror's script as it was when issue 15 asked for a third of its
  Redis CPU (``FILED_SCRIPT``: customers and row ids as one JSON argument, decoded with
  ``cjson`` and each field encoded again in Lua). The baseline.
* ``transactions``: the worker's own write now (``streams.bucket_writes``: per bucket, the
  customer hashes watched and their ``@applied`` read, then plain commands in one
  ``MULTI``/``EXEC``, replies off).
* ``plain commands``: the same hash fields by pipelined ``HSET`` and ``EXPIRE``, with the
  ``SADD`` of the bucket's customers and destinations, and no guard. Not a correct mirror
  (a worker that lost a partition could overwrite newer values): the floor, so the
  guard's own cost is the difference.

Why it exists: issue 15 asks for a mirror costing Redis a third of the CPU per CDR of the
script it was filed against; the pipeline's figure (bench/ingest.py) also holds the
other commands of a worker, and this isolates the bucket writes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import uuid
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import on_redis  # noqa: E402
from breakout.aggregate import WIDTH  # noqa: E402
from breakout.buckets import Granularity  # noqa: E402
from breakout.ledger import CustomerBucket, RowId, row_id  # noqa: E402
from breakout.redis_layout import Layout  # noqa: E402
from streams.bucket_writes import BucketWrite, EncodedBucket, RowFields, write_bucket  # noqa: E402
from streams.mirror import BUCKETS_IN_FLIGHT, _PackedConnection  # noqa: E402

TTL = 86_400
BUCKETS = (
    (Granularity.MINUTE, 1_795_000_000),
    (Granularity.HOUR, 1_794_999_600),
    (Granularity.DAY, 1_794_960_000),
)
WAYS = ("when filed", "transactions", "plain commands")

# A flush's changes per bucket: customer → (its bucket value, the rows changed).
Changed = dict[str, tuple[CustomerBucket, set[RowId]]]
Flush = dict[tuple[Granularity, int], Changed]


def flushes(count: int, per_flush: int, seed: int) -> list[Flush]:
    rng = random.Random(seed)
    destinations = [f"Destination {d:02d} - Mobile" for d in range(64)]
    providers = [f"provider-{p}" for p in range(4)]
    customers = {
        f"customer-{c:04d}": (rng.sample(destinations, 30), rng.sample(providers, 3)) for c in range(1000)
    }
    names = list(customers)
    result: list[Flush] = []
    for offset in range(count):
        flush: Flush = {}
        for _ in range(per_flush):
            customer = rng.choice(names)
            own_destinations, own_providers = customers[customer]
            row = row_id(rng.choice(own_destinations), rng.choice(own_providers), "EUR")
            # Counters as a CDR leaves them: small counts, durations and money in minor units.
            counters = [rng.randrange(3), rng.randrange(2), rng.randrange(600_000), rng.randrange(5_000)]
            counters += [rng.randrange(2) for _ in range(WIDTH - len(counters))]
            for bucket in BUCKETS:
                changed = flush.setdefault(bucket, {})
                value, rows = changed.setdefault(customer, (CustomerBucket(offset, {}), set()))
                value.rows[row] = counters
                rows.add(row)
        result.append(flush)
    return result


def queue_filed(pipe: Pipeline, layout: Layout, flush: Flush) -> None:
    """The flush as the worker wrote it when issue 15 was filed: per bucket, one call with
    every customer, offset and row id in one JSON argument and the counters in another."""
    for (granularity, start), changed in flush.items():
        customers: list[str] = []
        counters: list[list[int]] = []
        for customer, (value, rows) in changed.items():
            row_ids = list(rows)
            customers.append(f'[{orjson.dumps(customer).decode()},"{value.applied}",[{",".join(row_ids)}]]')
            counters += [value.rows[row] for row in row_ids]
        pipe.eval(
            FILED_SCRIPT,
            3,
            layout.customers(granularity, start),
            layout.destinations(granularity, start),
            layout.buckets(granularity),
            TTL,
            start,
            layout.customer_rows_prefix(granularity, start),
            layout.destination_rows(granularity, start, ""),
            "[" + ",".join(customers) + "]",
            orjson.dumps(counters),
        )


def encoded(fields: RowFields, changed: Changed) -> list[EncodedBucket]:
    write = BucketWrite()
    for customer, (value, rows) in changed.items():
        write.add(customer, value, rows)
    return write.encode(fields)


async def write_transactions(client: aioredis.Redis, layout: Layout, fields: RowFields, flush: Flush) -> None:
    """Each bucket's transactions, ``BUCKETS_IN_FLIGHT`` side by side (each on a connection
    of its own), as the mirror sends a chunk's."""
    limit = asyncio.Semaphore(BUCKETS_IN_FLIGHT)

    async def one(granularity: Granularity, start: int, part: EncodedBucket) -> None:
        async with limit:
            await write_bucket(client, layout, granularity, start, TTL, part)

    await asyncio.gather(
        *(one(g, start, part) for (g, start), changed in flush.items() for part in encoded(fields, changed))
    )


def queue_plain(pipe: Pipeline, layout: Layout, fields: RowFields, flush: Flush) -> None:
    """The flush's fields by ``HSET``, each key given its expiry by ``EXPIRE`` after it, in
    the same parts as the transactions: what differs is only the guard."""
    for (g, start), changed in flush.items():
        for bucket in encoded(fields, changed):
            queue_part(pipe, layout, g, start, bucket)


def queue_part(pipe: Pipeline, layout: Layout, g: Granularity, start: int, bucket: EncodedBucket) -> None:
    """One part's commands as the transaction sends them, without ``WATCH`` and its read."""
    prefix = layout.customer_rows_prefix(g, start)
    for customer, written in zip(bucket.customers, bucket.fields, strict=True):
        pipe.execute_command("HSET", prefix + customer, *written)
        pipe.execute_command("EXPIRE", prefix + customer, TTL)
    pipe.execute_command("SADD", layout.customers(g, start), *bucket.customers)
    pipe.execute_command("EXPIRE", layout.customers(g, start), TTL)
    for destination, pairs in bucket.destination_fields(set()):
        key = layout.destination_rows(g, start, destination)
        pipe.execute_command("HSET", key, *pairs)
        pipe.execute_command("EXPIRE", key, TTL)
    pipe.execute_command("SADD", layout.destinations(g, start), *bucket.destinations)
    pipe.execute_command("EXPIRE", layout.destinations(g, start), TTL)


async def cpu_seconds(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_run(redis_url: str, way: str, work: list[Flush], per_flush: int) -> float:
    """Redis CPU µs per CDR of writing ``work`` one ``way``, into keys of a fresh app id."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=_PackedConnection)
    client = aioredis.Redis(connection_pool=pool)
    layout, fields = Layout(f"bench-{uuid.uuid4().hex[:8]}"), RowFields()
    try:
        before = await cpu_seconds(client)
        for flush in work:
            if way == "transactions":
                await write_transactions(client, layout, fields, flush)
                continue
            pipe = client.pipeline(transaction=False)
            if way == "when filed":
                queue_filed(pipe, layout, flush)
            else:
                queue_plain(pipe, layout, fields, flush)
            await pipe.execute()
        spent = await cpu_seconds(client) - before
        # Only this run's keys go: BREAKOUT_REDIS may be a Redis that holds other data. By
        # DEL, not UNLINK: UNLINK frees in a thread of Redis's own while the next run is
        # measured, which charged one way's keys to the next (the first run of the script
        # measured 14.7 us, the later ones 25.5, each after another way's keys).
        async for key in client.scan_iter(match="{" + layout.app_id + ":*", count=1000):
            await client.delete(key)
        return spent * 1e6 / (len(work) * per_flush)
    finally:
        await client.aclose()
        await pool.disconnect()


async def run(args: argparse.Namespace, redis_url: str) -> None:
    work = flushes(args.flushes, args.per_flush, seed=7)
    figures: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.runs):
        for way in WAYS:  # taking turns, so the machine's noise falls on each alike
            figures[way].append(await one_run(redis_url, way, work, args.per_flush))
    baseline = statistics.median(figures[WAYS[0]])
    print(f"{args.flushes} flushes of {args.per_flush:,} CDRs, {args.runs} runs; Redis CPU per CDR (median)")
    for way in WAYS:
        median = statistics.median(figures[way])
        runs = ", ".join(f"{figure:.2f}" for figure in figures[way])
        print(f"  {way:<16}{median:>7.2f} us  ({median / baseline:.2f}x the filed script's; runs: {runs})")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=positive, default=3)
    parser.add_argument("--flushes", type=positive, default=30)
    parser.add_argument("--per-flush", type=positive, default=6000, help="CDRs per flush")
    args = parser.parse_args()
    on_redis("bench-mirror-", lambda redis_url: run(args, redis_url))


# The mirror's script when issue 15 was filed (before 0aa9a7f), kept here as the baseline its
# target is a share of. ARGV: ttl, bucket start, customer-hash key prefix, destination-hash key
# prefix, the customers as JSON ([name, applied, [row id, ...]] each), every row's counters
# as one JSON array in the same order.
FILED_SCRIPT = """
local ttl = tonumber(ARGV[1])
local customer_prefix, destination_prefix = ARGV[3], ARGV[4]
local function hset(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HSET', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local refused = {}
local written = {}
local by_destination = {}
local destinations = {}
local next_counters = string.gmatch(ARGV[6], '%[[%d,]+%]')
for _, entry in ipairs(cjson.decode(ARGV[5])) do
  local customer, applied, rows = entry[1], entry[2], entry[3]
  local customer_key = customer_prefix .. customer
  local current = tonumber(redis.call('HGET', customer_key, '@applied') or '-1')
  if current > tonumber(applied) then
    refused[#refused + 1] = customer
    for _ = 1, #rows do next_counters() end
  else
    written[#written + 1] = customer
    local by_customer = {'@applied', applied}
    for _, row in ipairs(rows) do
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
    hset(customer_key, by_customer)
    redis.call('EXPIRE', customer_key, ttl)
  end
end
if #written > 0 then
  for i = 1, #written, 1000 do
    redis.call('SADD', KEYS[1], unpack(written, i, math.min(i + 999, #written)))
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
end
for _, destination in ipairs(destinations) do
  local destination_key = destination_prefix .. destination
  hset(destination_key, by_destination[destination])
  redis.call('EXPIRE', destination_key, ttl)
end
if #destinations > 0 then
  for i = 1, #destinations, 1000 do
    redis.call('SADD', KEYS[2], unpack(destinations, i, math.min(i + 999, #destinations)))
  end
  redis.call('EXPIRE', KEYS[2], ttl)
end
return refused
"""


if __name__ == "__main__":
    main()
