"""One bucket's changed customer-buckets, written to Redis as one guarded transaction.

After a rebalance, the worker that lost a partition may still flush older values of it, so a
customer-bucket is written only if Redis does not hold a newer one: its ``@applied`` offset
is higher. An equal offset is written: both workers computed the same state from the same
messages. That guard was a Lua script; handing Redis every hash field and value through Lua
(each argument becomes a Lua string, then a Redis string again at each ``redis.call``) cost
it more than the writes themselves (docs/operations.md, "Sizing"). So the writes are plain
commands, and the guard is optimistic locking. One bucket's write, on one connection to the
Redis (or cluster shard) of its slot, every key of a bucket sharing its hash tag:

1. ``WATCH`` the customer hashes it writes, and read their ``@applied`` (``READ_HELD``, a
   read-only script, which also checks that every other key the write touches holds the
   type it should, so a stray key fails the write here, not unseen inside the transaction;
   and which keys already expire late enough, whose ``EXPIRE`` is left out).
2. Leave out the customers Redis holds newer (refused, with their destination fields), and
   send the rest in ``MULTI``/``EXEC`` with replies turned off (``CLIENT REPLY OFF``): the
   worker reads two replies, not one or two per command. The transaction also sets a key of
   its own, read back (``GETDEL``) once replies are on again: it exists only if ``EXEC``
   ran, which it does not when another writer changed a watched hash after step 1. Then the
   write starts again at step 1, reading what that writer wrote.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import hiredis
import orjson
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import MovedError, RedisError
from redis.typing import EncodableT

from breakout.aggregate import Counters
from breakout.buckets import Granularity
from breakout.ledger import CustomerBucket, RowId, row_parts
from breakout.redis_client import Client
from breakout.redis_layout import APPLIED_FIELD, Layout, json_text

# Attempts at one bucket's transaction while other writers keep changing its watched
# customer hashes (only a worker that lost a partition and the one that gained it write
# the same customer hash); then the flush fails and is retried whole.
ATTEMPTS = 5
# Customer hashes one transaction watches. Redis checks each key a WATCH adds against
# every key the connection watches already, so a transaction watching n keys costs it n²/2
# comparisons: with a whole bucket of 1,000 customers in one, WATCH took a third of the
# guarded write's Redis CPU (bench/mirror_writes.py). A bucket's write is cut in parts.
WATCHED = 128
# How long the key that tells whether a transaction ran may outlive it unread (a lost
# connection between EXEC and its GETDEL).
TOKEN_MS = 60_000
# A key's expiry is set again unless it has at least this long left, and no less than the
# write's own expiry minus this (``READ_HELD``): a bucket of a worker falling further
# behind the clock gets the longer expiry its stream time asks for.
EXPIRY_SLACK_MS = 60_000

# Each customer hash's @applied (nil: none), after checking that every further key holds
# its type or none; and which keys will outlive the transaction with an expiry no shorter
# than the write's, less a minute (the worker then leaves their EXPIRE out: half of a live
# flush's commands). KEYS: the n customer hashes, then the further keys; ARGV: n, the least
# milliseconds an expiry kept must have left, then the type of each further key. Returns
# the offsets and a string of one '1' (kept) or '0' per key.
READ_HELD = """
local n, least = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = n + 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= ARGV[i - n + 2] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. ARGV[i - n + 2])
  end
end
local held, lasting = {}, {}
for i = 1, n do
  held[i] = redis.call('HGET', KEYS[i], '@applied')
end
for i = 1, #KEYS do
  lasting[i] = redis.call('PTTL', KEYS[i]) >= least and '1' or '0'
end
return {held, table.concat(lasting)}
"""


class RowFields:
    """Hash field names, cut once from a row id or customer name, not encoded per write.

    A row id is the JSON text of ``[destination, provider, currency]``; its customer-hash
    field is that text in ``json_text``'s spelling, and its destination-hash field is the
    same with the customer in front of provider and currency.
    """

    LIMIT = 100_000

    def __init__(self) -> None:
        self._rows: dict[RowId, tuple[str, str, str]] = {}
        self._customers: dict[str, str] = {}

    def of(self, row: RowId) -> tuple[str, str, str]:
        """``(customer-hash field, destination, the destination field after the customer)``."""
        known = self._rows.get(row)
        if known is None:
            if len(self._rows) >= self.LIMIT:
                self._rows.clear()
            destination = row_parts(row)[0]
            field = json_text(row.encode())
            tail = field[len(json_text(orjson.dumps(destination))) + 2 :]
            known = self._rows[row] = (field, destination, tail)
        return known

    def customer(self, customer: str) -> str:
        """The start of the customer's destination-hash fields, up to the provider."""
        prefix = self._customers.get(customer)
        if prefix is None:
            if len(self._customers) >= self.LIMIT:
                self._customers.clear()
            prefix = self._customers[customer] = "[" + json_text(orjson.dumps(customer)) + ","
        return prefix


def each_encoded(counters: list[Counters]) -> list[bytes]:
    """Each row's counters as JSON, from one ``orjson.dumps`` of them all.

    orjson returns each result in a buffer of at least 4 kB that it does not shrink, so a
    flush holding a value per row would hold 4 kB per row; the pieces cut from one text
    are right-sized (and one call is cheaper than one per row). Counters are integers,
    so the text has no line breaks of its own to confuse the cut.
    """
    return orjson.dumps(counters).replace(b"],[", b"]\n[")[1:-1].split(b"\n") if counters else []


class EncodedBucket:
    """One bucket's write as hash fields and values, ready to be sent but for the refused.

    Built at once from the bucket's values (``BucketWrite.encode``), so what is sent is the
    state of one moment even though the agent runs while the write waits for Redis.
    """

    def __init__(self) -> None:
        self.customers: list[str] = []
        self.applied: list[int] = []
        self.fields: list[list[EncodableT]] = []  # per customer: @applied, then field/value pairs
        self.destinations: dict[str, list[EncodableT]] = {}  # destination → field/value pairs
        self.owners: dict[str, list[int]] = {}  # destination → the customer of each pair
        self.deleted: list[str] = []

    def destination_fields(self, refused: set[int]) -> Iterable[tuple[str, list[EncodableT]]]:
        """Each destination's field/value pairs, without those of ``refused`` customers."""
        if not refused:
            yield from self.destinations.items()
            return
        for destination, pairs in self.destinations.items():
            owners = self.owners[destination]
            kept = [
                x for n, owner in enumerate(owners) if owner not in refused for x in pairs[2 * n : 2 * n + 2]
            ]
            if kept:
                yield destination, kept


class BucketWrite:
    """One bucket's changed customers, gathered before their fields are encoded.

    ``add`` only notes each customer's rows: under live traffic a flush writes thousands
    of customer-buckets of a row or two each, so the work is done once per bucket in
    ``encode`` (one encode of every counter, cached field names), not per customer.
    """

    def __init__(self) -> None:
        self.customers: list[tuple[str, int, list[RowId]]] = []  # (customer, applied, rows)
        self.counters: list[Counters] = []  # of every row noted, in order
        self.deleted: list[str] = []

    def add(self, customer: str, bucket: CustomerBucket, rows: Iterable[RowId]) -> None:
        values = bucket.rows
        rows = list(rows)
        self.customers.append((customer, bucket.applied, rows))
        self.counters += [values[row] for row in rows]

    def delete(self, customer: str) -> None:
        """The customer no longer has rows in the bucket (retention)."""
        self.deleted.append(customer)

    def encode(self, fields: RowFields) -> list[EncodedBucket]:
        """The bucket's write as transactions of at most ``WATCHED`` customers each."""
        encoded = iter(each_encoded(self.counters))
        of = fields.of
        bucket = EncodedBucket()
        bucket.deleted = self.deleted
        parts = [bucket]
        destinations, owners = bucket.destinations, bucket.owners
        for customer, applied, rows in self.customers:
            if len(bucket.customers) == WATCHED:
                bucket = EncodedBucket()
                parts.append(bucket)
                destinations, owners = bucket.destinations, bucket.owners
            n = len(bucket.customers)
            prefix = fields.customer(customer)
            written: list[EncodableT] = [APPLIED_FIELD, applied]
            for row in rows:
                field, destination, tail = of(row)
                counters = next(encoded)
                written += (field, counters)
                pairs = destinations.get(destination)
                if pairs is None:
                    destinations[destination] = [prefix + tail, counters]
                    owners[destination] = [n]
                else:
                    pairs += (prefix + tail, counters)
                    owners[destination].append(n)
            bucket.customers.append(customer)
            bucket.applied.append(applied)
            bucket.fields.append(written)
        return parts


def _pack(commands: Iterable[tuple[EncodableT, ...]]) -> bytes:
    return b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]


@asynccontextmanager
async def _connection(client: Client, key: str) -> AsyncIterator[AbstractConnection]:
    """A connection of its own to the Redis (or the cluster shard) holding ``key``'s slot.

    A failed write leaves the connection watching keys, or with replies off: it is closed,
    not reused as it is.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(key)
        if node is None:
            raise RedisError(f"no cluster shard serves the slot of {key!r}")
        shard_connection = node.acquire_connection()
        try:
            yield shard_connection
        except BaseException as exc:
            await shard_connection.disconnect()
            if isinstance(exc, MovedError):  # the slot moved: the next write goes to its new shard
                await client.nodes_manager.move_slot(exc)
            raise
        finally:
            node.release(shard_connection)
        return
    pool = client.connection_pool
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        yield connection
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


@dataclass(frozen=True)
class _PartKeys:
    """The keys one part of a bucket's write touches, named once per part."""

    customer_prefix: str  # a customer's hash is this + its name
    customers: list[str]  # the part's customer hashes, in its order
    destinations: dict[str, str]  # destination → its hash
    customer_set: str
    destination_set: str
    version: str

    @classmethod
    def of(cls, layout: Layout, granularity: Granularity, start: int, bucket: EncodedBucket) -> _PartKeys:
        by_customer = layout.customer_rows_prefix(granularity, start)
        by_destination = layout.destination_rows_prefix(granularity, start)
        return cls(
            customer_prefix=by_customer,
            customers=[by_customer + customer for customer in bucket.customers],
            destinations={d: by_destination + d for d in bucket.destinations},
            customer_set=layout.customers(granularity, start),
            destination_set=layout.destinations(granularity, start),
            version=layout.version(granularity, start),
        )


async def write_bucket(
    client: Client, layout: Layout, granularity: Granularity, start: int, ttl: int, bucket: EncodedBucket
) -> list[str]:
    """Write ``bucket`` (the module's docstring says how); the customers Redis refused."""
    keys = _PartKeys.of(layout, granularity, start, bucket)
    further = [*keys.destinations.values(), keys.customer_set, keys.destination_set, keys.version]
    types = ["hash"] * len(keys.destinations) + ["set", "set", "string"]
    every = keys.customers + further
    least_ms = max(EXPIRY_SLACK_MS, ttl * 1000 - EXPIRY_SLACK_MS)
    read: list[tuple[EncodableT, ...]] = [("WATCH", *keys.customers)] if keys.customers else []
    read.append(("EVAL", READ_HELD, len(every), *every, len(keys.customers), least_ms, *types))
    async with _connection(client, keys.version) as connection:
        for _ in range(ATTEMPTS):
            await connection.send_packed_command(_pack(read))
            if keys.customers:
                await connection.read_response()  # WATCH's OK
            reply = await connection.read_response(disable_decoding=True)
            assert isinstance(reply, list)
            held, lasting = reply
            applied = bucket.applied
            refused = {n for n, value in enumerate(held) if value is not None and int(value) > applied[n]}
            expiring = {every[n] for n, kept in enumerate(lasting) if kept != ord("1")}
            token = layout.written(granularity, start, uuid.uuid4().hex)
            await connection.send_packed_command(
                _pack(_transaction(keys, ttl, bucket, refused, expiring, token))
            )
            await connection.read_response()  # CLIENT REPLY ON's OK
            if await connection.read_response() is not None:  # GETDEL of the token: EXEC ran
                return [bucket.customers[n] for n in sorted(refused)]
            await asyncio.sleep(0)
    raise RedisError(
        f"bucket {granularity.value} {start} not written after {ATTEMPTS} attempts: its customer "
        "hashes kept changing, or Redis refused the transaction"
    )


def _transaction(
    keys: _PartKeys, ttl: int, bucket: EncodedBucket, refused: set[int], expiring: set[str], token: str
) -> list[tuple[EncodableT, ...]]:
    """Step 2's commands: the transaction between replies off and on, then the token's read.

    A key is given its expiry only if it is in ``expiring``: ``HSET``, ``SADD`` and ``INCR``
    keep the expiry a key has, and a kept one outlasts the transaction (``READ_HELD``).
    """
    commands: list[tuple[EncodableT, ...]] = [("CLIENT", "REPLY", "OFF"), ("MULTI",)]

    def write(command: tuple[EncodableT, ...], key: str) -> None:
        commands.append(command)
        if key in expiring:
            commands.append(("EXPIRE", key, ttl))

    written: list[str] = []
    for n, key in enumerate(keys.customers):
        if n not in refused:
            write(("HSET", key, *bucket.fields[n]), key)
            written.append(bucket.customers[n])
    for customer in bucket.deleted:
        commands += (("DEL", keys.customer_prefix + customer), ("SREM", keys.customer_set, customer))
    destinations: list[str] = []
    for destination, pairs in bucket.destination_fields(refused):
        key = keys.destinations[destination]
        write(("HSET", key, *pairs), key)
        destinations.append(destination)
    if written:
        write(("SADD", keys.customer_set, *written), keys.customer_set)
    if destinations:
        write(("SADD", keys.destination_set, *destinations), keys.destination_set)
    # Readers cache a bucket's rows until its version moves (see docs/redis-layout.md).
    write(("INCR", keys.version), keys.version)
    commands += (("SET", token, 1, "PX", TOKEN_MS), ("EXEC",), ("CLIENT", "REPLY", "ON"), ("GETDEL", token))
    return commands
