"""The mirror's Lua script against a real Redis: exact counters, any names, large buckets."""

from __future__ import annotations

from collections import Counter

import orjson
import redis.asyncio as aioredis

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, row_id
from breakout.settings import Settings
from streams.mirror import RedisMirror

START = 1_795_597_200
HUGE = 2**62 + 1  # past 2^53: a Lua number would round it


async def test_write_keeps_counters_exact_and_names_as_given(settings: Settings) -> None:
    app = settings.app_id
    mirror = RedisMirror(settings.redis, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    key = BucketKey(0, Granularity.HOUR, START, 'cust/1 "é"')
    odd = ('Caf\u00e9 "q" \\ / x', "p/1", "EUR")
    rows = {row_id(*odd): [1, 1, 60_000, HUGE, HUGE + 2, 0, 1]}
    # More rows than one HSET takes in the script (it writes them in chunks).
    rows |= {row_id(f"d{i % 7}", f"p{i}", "USD"): [i, 0, 0, i, i, 0, 0] for i in range(1_200)}
    mirror.stage(key, CustomerBucket(5, rows), None)
    client = aioredis.from_url(settings.redis)
    try:
        await mirror._write(client, mirror._staged, {0: (START * 1000, 5)})
        by_customer = await client.hgetall(f"{app}:rows:h:{START}:c:{key.customer}")
        by_destination = await client.hgetall(f"{app}:rows:h:{START}:d:{odd[0]}")
        destinations = await client.smembers(f"{app}:idx:h:{START}:destinations")
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
