"""Reads the Redis mirror for the API, caching what has not changed since the last read.

Every bucket carries a version the worker bumps on each write (``docs/redis-layout.md``).
One ``MGET`` per request tells which buckets moved; only those are read again. Summing a
month of a large deployment's rows is the expensive part, so the sum of all buckets but
the newest is cached too. On a Refresh during live traffic only the newest bucket changes;
within it only the customers whose hash's ``@applied`` offset moved are read and grouped
again, so the answer costs those customers' rows plus the page shown.

Redis can be emptied at any moment and refilled by the workers, and a half-refilled mirror
holds short totals. So rows are only read from a *complete* mirror
(``breakout.redis_layout.completeness``): the epoch (the marker, and on a Redis Cluster one
key per shard) comes with the versions' ``MGET`` and the watermarks with the freshness
``HGETALL`` every report makes anyway, and each read pipeline ends by reading the epoch
again, which proves Redis (no shard of it) was not emptied mid-read. Otherwise
``IncompleteMirror`` is raised, for a 503.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from api.collector import freeze_fill
from api.newest import BucketGroups, regroup
from api.singleflight import SingleFlight
from breakout.aggregate import Counters, empty
from breakout.aggregate import add as add_counters
from breakout.redis_client import Client, EpochKeys, get_many
from breakout.redis_layout import (
    Completeness,
    Lag,
    Layout,
    Watermark,
    completeness,
    decode_rows,
    decode_watermarks,
    joined_epoch,
)
from breakout.snapshot import Filters, Settled, SourceRow, Summary, group_rows, merge_groups
from breakout.timerange import Bucket

# Beyond this many named customers (or destinations) one read of everything is cheaper.
MAX_NAMED_KEYS = 64
# Summing at least this many rows into a cache entry moves them out of the collector's sight.
FREEZE_ROWS = 100_000

Source = tuple[str, str]  # ("all", ""), ("c", customer) or ("d", destination)
CustomerRows = dict[str, tuple[bytes | None, list[SourceRow]]]  # customer → (@applied, rows)
Token = tuple[bytes, bytes] | None  # (mirror marker, bucket version); None: the bucket is empty

# A bucket's customers with each one's hash's @applied, as one flat reply [name, applied, …]
# (applied nil for a hash gone meanwhile). KEYS: the customers index; ARGV: the customer-hash
# key prefix, which carries the bucket's hash tag like KEYS, so every key read is in one
# slot (one shard of a cluster), as in the mirror's script.
CUSTOMERS_APPLIED = """
local prefix, reply = ARGV[1], {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  reply[#reply + 1] = name
  reply[#reply + 1] = redis.call('HGET', prefix .. name, '@applied') or false
end
return reply
"""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small least-recently-used map bounded by a total weight (rows, or entries)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        if weight > self.capacity:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._items[key] = (value, weight)
        self.weight += weight
        while self.weight > self.capacity:
            _, (_, dropped) = self._items.popitem(last=False)
            self.weight -= dropped


@dataclass(frozen=True, slots=True)
class Freshness:
    """From the watermark hash: ``as_of`` is the oldest partition's event time, in ms.

    The watermarks themselves are kept: with the marker the versions' ``MGET`` reads, they
    tell whether the mirror is complete, at no extra round trip.
    """

    as_of_ms: int | None
    stream_ms: int | None
    written_ms: int | None
    watermarks: dict[int, Watermark]
    ingested_ms: int | None = None

    @property
    def behind_ms(self) -> int | None:
        """How far the newest mirrored event time trails the newest ingested: about the
        linger and a flush when the pipeline keeps up, growing when it falls behind."""
        if self.ingested_ms is None or self.stream_ms is None:
            return None
        return max(0, self.ingested_ms - self.stream_ms)


@dataclass(frozen=True, slots=True)
class MirrorHealth:
    """What ``/readyz`` and ``/metrics`` report: freshness, completeness and the workers' lag."""

    freshness: Freshness
    completeness: Completeness
    lags: list[Lag]


class IncompleteMirror(Exception):
    """The mirror does not hold every partition's rows (Redis emptied, being refilled): an
    answer now would pass short totals for whole ones."""

    def __init__(self, state: Completeness) -> None:
        super().__init__(state.explain())
        self.completeness = state


class MirrorReader:
    """The API's view of the mirror of one app id, whose internal topic has ``partitions``."""

    def __init__(self, client: Client, layout: Layout, partitions: int, cache_rows: int) -> None:
        self.client = client
        self.layout = layout
        self.epoch_keys = EpochKeys(client, layout)
        self.partitions = partitions
        # Caches are keyed without versions and hold the version they were read at, so a
        # bucket that keeps changing replaces its entry instead of piling up stale ones.
        self._rows: LRU[tuple[Bucket, Source], tuple[Token, list[SourceRow]]] = LRU(cache_rows)
        # Per bucket (and mirror marker): the version read at, and customer → (its hash's
        # @applied, its rows); and per bucket, filters and grouping, the newest bucket's
        # groups kept up to date customer by customer (``api.newest``).
        self._customers: LRU[tuple[Bucket, bytes], tuple[Token, CustomerRows]] = LRU(cache_rows)
        self._newest: LRU[Hashable, tuple[CustomerRows, BucketGroups]] = LRU(cache_rows)
        # Per bucket, marker and customer that moved: field → (its value, its row).
        self._raw: LRU[Hashable, dict[bytes, tuple[bytes, SourceRow]]] = LRU(cache_rows)
        # Weighed by their groups: a thousand customers' own small reports fit beside the
        # admins' large ones, instead of pushing each other out by count.
        self._settled: LRU[Hashable, tuple[list[tuple[Bucket, Token]], Settled]] = LRU(cache_rows)
        self._summaries: LRU[Hashable, tuple[list[Token], Summary]] = LRU(cache_rows)
        # Identical reads in flight at once, keyed with the versions they read, run once.
        self._summarizing: SingleFlight[Summary] = SingleFlight()
        self._reading: SingleFlight[dict[Bucket, CustomerRows]] = SingleFlight()
        self._settling: SingleFlight[Settled] = SingleFlight()
        # Per bucket and filters: the sum of its admitted rows (a series point's part).
        self._totals: LRU[tuple[Bucket, Filters], tuple[Token, Counters]] = LRU(cache_rows)

    async def freshness(self) -> Freshness:
        return freshness_of(decode_watermarks(await self.client.hgetall(self.layout.watermarks)))

    async def health(self) -> MirrorHealth:
        """Freshness, completeness and the consumer lag the workers report, in one round trip."""
        keys = await self.epoch_keys.keys()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        pipe.hgetall(self.layout.watermarks)
        pipe.hgetall(self.layout.lag)
        *epoch, marks, lags = await pipe.execute()
        watermarks = decode_watermarks(marks)
        return MirrorHealth(
            freshness_of(watermarks),
            completeness(joined_epoch(epoch), watermarks, self.partitions),
            sorted((Lag.decode(raw) for raw in lags.values()), key=lambda lag: (lag.topic, lag.partition)),
        )

    async def versions(self, buckets: list[Bucket], freshness: Freshness) -> list[Token]:
        """Each bucket's version with the mirror's epoch; None for a bucket with no data.

        Raises ``IncompleteMirror`` unless the epoch, read in the same ``MGET``, and the
        watermarks of ``freshness`` say every partition is mirrored whole.
        """
        layout = self.layout
        keys = await self.epoch_keys.keys()
        replies = await get_many(self.client, keys + [layout.version(g, start) for g, start in buckets])
        epoch, versions = joined_epoch(replies[: len(keys)]), replies[len(keys) :]
        state = completeness(epoch, freshness.watermarks, self.partitions)
        if epoch is None or not state.complete:
            raise IncompleteMirror(state)
        marker = epoch.encode()
        return [None if version is None else (marker, version) for version in versions]

    async def _execute(self, pipe: Pipeline | ClusterPipeline, marker: bytes) -> list[Any]:
        """Run a read pipeline that ends by reading the epoch again: unchanged, nothing it
        read can come from an emptied (or emptied and partly refilled) Redis or shard, since
        every refill starts a new epoch. Costs a command per shard, not a round trip."""
        if not len(pipe):
            return []
        keys = await self.epoch_keys.keys()
        for key in keys:
            pipe.get(key)
        replies = await pipe.execute()
        now = joined_epoch(replies[len(replies) - len(keys) :])
        if now is None or now.encode() != marker:
            raise IncompleteMirror(completeness(now, {}, self.partitions))
        return replies[: len(replies) - len(keys)]

    async def summary(
        self, buckets: list[Bucket], tokens: list[Token], filters: Filters, group_by: tuple[str, ...]
    ) -> Summary:
        """The summed rows of ``buckets`` that ``filters`` admits, per group_by values and currency."""
        key = (filters, group_by, tuple(buckets))
        cached = self._summaries.get(key)
        if cached is not None and cached[0] == tokens:
            return cached[1]
        return await self._summarizing.run(
            (key, tuple(tokens)), lambda: self._summarize_and_keep(key, buckets, tokens, filters, group_by)
        )

    async def _summarize_and_keep(
        self,
        key: Hashable,
        buckets: list[Bucket],
        tokens: list[Token],
        filters: Filters,
        group_by: tuple[str, ...],
    ) -> Summary:
        summary = await self._summarize(buckets, tokens, filters, group_by)
        self._summaries.put(key, (tokens, summary), len(summary.settled.groups) + len(summary.newest) + 1)
        return summary

    async def _summarize(
        self, buckets: list[Bucket], tokens: list[Token], filters: Filters, group_by: tuple[str, ...]
    ) -> Summary:
        present: list[tuple[Bucket, Token]] = [
            (bucket, token) for bucket, token in zip(buckets, tokens, strict=True) if token is not None
        ]
        if not present:
            return Summary(group_by, Settled({}), {})
        sources = _sources(filters)
        marker = next(token[0] for _, token in present if token is not None)  # one MGET: one marker
        *older, newest = present
        settled_key = (filters, group_by, tuple(bucket for bucket, _ in older))
        cached = self._settled.get(settled_key)
        settled = cached[1] if cached is not None and cached[0] == older else None
        if settled is None:
            # Keyed without the newest bucket's version: while a month is summed cold (seconds),
            # the newest bucket moves many times, and each Refresh meanwhile waits for this sum
            # instead of starting one of its own.
            settled = await self._settling.run(
                (settled_key, tuple(older)),
                lambda: self._settle(settled_key, older, sources, marker, filters, group_by),
            )
        if sources == [("all", "")]:
            # Live traffic: the settled buckets are summed already, and only the customers
            # that moved in the newest bucket are grouped again (``api.newest``).
            groups = await self._newest_groups(newest, marker, filters, group_by)
            return Summary(group_by, settled, groups.groups, groups.totals)
        rows = await self._read([newest], sources, marker)
        return Summary(group_by, settled, group_rows(rows[newest[0]], group_by, filters))

    async def _settle(
        self,
        key: Hashable,
        older: list[tuple[Bucket, Token]],
        sources: list[Source],
        marker: bytes,
        filters: Filters,
        group_by: tuple[str, ...],
    ) -> Settled:
        """Every bucket but the newest, summed and kept while their versions hold."""
        rows = await self._read(older, sources, marker)
        settled = Settled(merge_groups([group_rows(rows[bucket], group_by, filters) for bucket, _ in older]))
        self._settled.put(key, (older, settled), len(settled.groups) + 1)
        if sum(len(part) for part in rows.values()) >= FREEZE_ROWS:
            freeze_fill()
        return settled

    async def bucket_totals(
        self, buckets: list[Bucket], tokens: list[Token], filters: Filters
    ) -> dict[Bucket, Counters]:
        """Each bucket's admitted rows summed over every group and currency: the counts behind
        a series point. Cached per bucket while its version holds, so a month of hours costs
        one ``MGET`` and the sums of the buckets that moved."""
        totals: dict[Bucket, Counters] = {}
        moved: list[tuple[Bucket, Token]] = []
        for bucket, token in zip(buckets, tokens, strict=True):
            if token is None:
                totals[bucket] = empty()
                continue
            cached = self._totals.get((bucket, filters))
            if cached is not None and cached[0] == token:
                totals[bucket] = cached[1]
            else:
                moved.append((bucket, token))
        if moved:
            # Read past the row cache: the sums are what is kept, and a month of hours of
            # rows would push out the cached rows of the reports people refresh.
            marker = next(token[0] for _, token in moved if token is not None)
            sources = _sources(filters)
            wanted = [(bucket, source, token) for bucket, token in moved for source in sources]
            fetched = iter(await self._fetch(wanted, marker))
            unfiltered = filters == Filters()
            for bucket, token in moved:
                total = empty()
                for _ in sources:
                    for row in next(fetched):
                        if unfiltered or filters.admits(row):
                            add_counters(total, row[4])
                self._totals.put((bucket, filters), (token, total))
                totals[bucket] = total
        return totals

    async def _newest_groups(
        self, newest: tuple[Bucket, Token], marker: bytes, filters: Filters, group_by: tuple[str, ...]
    ) -> BucketGroups:
        """The newest bucket's groups, grouping again only the customers whose hash moved
        since the last read of this report."""
        bucket = newest[0]
        customers = (await self._customers_of([newest], marker))[bucket]
        key = (bucket, marker, filters, group_by)
        known = self._newest.get(key)
        if known is not None and known[0] is customers:
            return known[1]
        groups = regroup(known[1] if known is not None else None, customers, group_by, filters)
        self._newest.put(key, (customers, groups), groups.weight)
        return groups

    async def _read(
        self, buckets: list[tuple[Bucket, Token]], sources: list[Source], marker: bytes
    ) -> dict[Bucket, list[SourceRow]]:
        """Rows of each bucket from the cache or, for the ones that moved, from Redis."""
        found: dict[Bucket, list[SourceRow]] = {bucket: [] for bucket, _ in buckets}
        missing = []
        for bucket, token in buckets:
            for source in sources:
                cached = self._rows.get((bucket, source))
                if cached is None or cached[0] != token:
                    missing.append((bucket, source, token))
                else:
                    found[bucket].extend(cached[1])
        if missing:
            fetched = await self._fetch(missing, marker)
            for (bucket, source, token), rows in zip(missing, fetched, strict=True):
                # Keyed without the version, so a newer version replaces the older entry.
                self._rows.put((bucket, source), (token, rows), len(rows) + 1)
                found[bucket].extend(rows)
        return found

    async def _fetch(
        self, wanted: list[tuple[Bucket, Source, Token]], marker: bytes
    ) -> list[list[SourceRow]]:
        everything = [(bucket, token) for bucket, (kind, _), token in wanted if kind == "all"]
        by_bucket = await self._customers_of(everything, marker) if everything else {}
        all_rows = {
            bucket: [row for _, rows in by_customer.values() for row in rows]
            for bucket, by_customer in by_bucket.items()
        }
        named = [(bucket, source) for bucket, source, _ in wanted if source[0] != "all"]
        named_rows = iter(await self._fetch_named(named, marker) if named else [])
        return [all_rows[bucket] if source[0] == "all" else next(named_rows) for bucket, source, _ in wanted]

    async def _fetch_named(self, wanted: list[tuple[Bucket, Source]], marker: bytes) -> list[list[SourceRow]]:
        """One customer's or one destination's hash per bucket."""
        pipe = self.client.pipeline(transaction=False)
        for (g, start), (kind, name) in wanted:
            pipe.hgetall(self.layout.rows(g, start, kind, name))
        replies = await self._execute(pipe, marker)
        return [
            _parse(kind, name, fields) for ((_, (kind, name)), fields) in zip(wanted, replies, strict=True)
        ]

    async def _customers_of(
        self, wanted: list[tuple[Bucket, Token]], marker: bytes
    ) -> dict[Bucket, CustomerRows]:
        """Every customer's rows of each bucket, reading again only the customers that moved.

        A bucket read at the version asked is not read again: it is at least as new as that
        version. Otherwise a customer hash's ``@applied`` offset changes with every write of
        it, so the bucket live traffic keeps changing costs one small read per customer plus
        the hashes that changed, not every hash; concurrent reads of the same versions share
        one.
        """
        found: dict[Bucket, CustomerRows] = {}
        moved: list[tuple[Bucket, Token]] = []
        for bucket, token in wanted:
            cached = self._customers.get((bucket, marker))
            if cached is not None and cached[0] == token:
                found[bucket] = cached[1]
            else:
                moved.append((bucket, token))
        if moved:
            found.update(
                await self._reading.run((tuple(moved), marker), lambda: self._read_customers(moved, marker))
            )
        return found

    async def _read_customers(
        self, wanted: list[tuple[Bucket, Token]], marker: bytes
    ) -> dict[Bucket, CustomerRows]:
        layout = self.layout
        plan: list[tuple[str, CustomerRows | None]] = []
        pipe = self.client.pipeline(transaction=False)
        for (g, start), _ in wanted:
            prefix = layout.customer_rows_prefix(g, start)
            cached = self._customers.get(((g, start), marker))
            known = cached[1] if cached is not None else None
            plan.append((prefix, known))
            if known is None:
                pipe.smembers(layout.customers(g, start))
            else:  # one reply for a thousand customers, not a thousand replies
                pipe.eval(CUSTOMERS_APPLIED, 1, layout.customers(g, start), prefix)
        listed = await self._execute(pipe, marker)
        pipe = self.client.pipeline(transaction=False)
        named: list[tuple[list[str], list[str]]] = []  # per bucket: its customers, those that moved
        for (prefix, known), reply in zip(plan, listed, strict=True):
            if known is None:
                customers = sorted(name.decode() for name in reply)
                moved = customers
            else:
                applied = {name.decode(): now for name, now in zip(reply[::2], reply[1::2], strict=True)}
                customers = sorted(applied)
                moved = []
                for customer in customers:
                    now, before = applied[customer], known.get(customer)
                    if now is None or before is None or before[0] != now:
                        moved.append(customer)
            for customer in moved:
                pipe.hgetall(prefix + customer)
            named.append((customers, moved))
        fresh = iter(await self._execute(pipe, marker))
        found: dict[Bucket, CustomerRows] = {}
        for (bucket, token), (_, known), (customers, moved) in zip(wanted, plan, named, strict=True):
            by_customer = dict(known or {})
            for customer in moved:
                fields = next(fresh)
                rows = (
                    _parse("c", customer, fields)
                    if known is None
                    else self._reparse((bucket, marker, customer), customer, fields)
                )
                by_customer[customer] = (fields.get(b"@applied"), rows)
            by_customer = {customer: by_customer[customer] for customer in customers}
            weight = sum(len(rows) for _, rows in by_customer.values()) + 1
            self._customers.put((bucket, marker), (token, by_customer), weight)
            found[bucket] = by_customer
        return found

    def _reparse(self, key: Hashable, customer: str, fields: dict[bytes, bytes]) -> list[SourceRow]:
        """A moved customer's hash as rows, decoding only the fields whose value changed since
        its last read: live traffic moves a few of a customer's hundreds of rows per flush.
        Kept for the customers that moved only, so a month read once holds no second copy."""
        before = self._raw.get(key) or {}
        now: dict[bytes, tuple[bytes, SourceRow]] = {}
        for field, value in fields.items():
            if field[:1] != b"[":  # "@applied"
                continue
            known = before.get(field)
            if known is None or known[0] != value:
                ((first, provider, currency, counters),) = decode_rows({field: value})
                known = (value, (customer, first, provider, currency, tuple(counters)))
            now[field] = known
        self._raw.put(key, now, len(now) + 1)
        return [row for _, row in now.values()]


def freshness_of(watermarks: dict[int, Watermark]) -> Freshness:
    """What the watermarks say of the mirror's age and of how far it trails the ingest."""
    # A partition that never had a message (offset -1) has no event time to be behind on.
    marks = [mark for mark in watermarks.values() if mark.offset >= 0]
    ingested = [mark.ingested_ms for mark in watermarks.values() if mark.ingested_ms is not None]
    ingested_ms = max(ingested, default=None)
    if not marks:
        written = max((mark.written_ms for mark in watermarks.values()), default=None)
        return Freshness(None, None, written, watermarks, ingested_ms)
    return Freshness(
        as_of_ms=min(mark.event_ms for mark in marks),
        stream_ms=max(mark.event_ms for mark in marks),
        written_ms=max(mark.written_ms for mark in watermarks.values()),
        watermarks=watermarks,
        ingested_ms=ingested_ms,
    )


def _sources(filters: Filters) -> list[Source]:
    """The keys to read: named customers' hashes, named destinations' hashes, or everything."""
    if filters.customers is not None and len(filters.customers) <= MAX_NAMED_KEYS:
        return [("c", customer) for customer in sorted(filters.customers)]
    if filters.destinations is not None and len(filters.destinations) <= MAX_NAMED_KEYS:
        return [("d", destination) for destination in sorted(filters.destinations)]
    return [("all", "")]


def _parse(kind: str, name: str, fields: dict[bytes, bytes]) -> list[SourceRow]:
    """A customer hash (``kind`` ``c``: rows by destination) or a destination hash (rows by
    customer) as source rows."""
    if kind == "c":
        return [
            (name, first, provider, currency, tuple(counters))
            for first, provider, currency, counters in decode_rows(fields)
        ]
    return [
        (first, name, provider, currency, tuple(counters))
        for first, provider, currency, counters in decode_rows(fields)
    ]
