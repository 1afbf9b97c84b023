"""Reads the Redis mirror for the API, caching what has not changed since the last read.

Every bucket carries a version the worker bumps on each write (``docs/redis-layout.md``).
One ``MGET`` per request tells which buckets moved; only those are read again. Summing a
month of a large deployment's rows is the expensive part, so the sum of all buckets but
the newest is cached too: on a Refresh during live traffic only the newest bucket changes,
and the answer costs one bucket's rows plus the merge.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson
import redis.asyncio as aioredis

from breakout.snapshot import Filters, SourceRow, Summary, group_rows, merge_groups
from breakout.timerange import Bucket

# Beyond this many named customers (or destinations) one read of everything is cheaper.
MAX_NAMED_KEYS = 64
GROUP_CACHE_ENTRIES = 256

Groups = dict[tuple[str, ...], list[int]]
Source = tuple[str, str]  # ("all", ""), ("c", customer) or ("d", destination)
Token = tuple[bytes, bytes] | None  # (mirror marker, bucket version); None: the bucket is empty

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
    """From the watermark hash: ``as_of`` is the oldest partition's event time, in ms."""

    as_of_ms: int | None
    stream_ms: int | None
    written_ms: int | None


class MirrorReader:
    """The API's view of the mirror for one app id."""

    def __init__(self, client: aioredis.Redis, app_id: str, cache_rows: int) -> None:
        self.client = client
        self.app_id = app_id
        self._rows: LRU[tuple[Bucket, Source, Token], list[SourceRow]] = LRU(cache_rows)
        self._groups: LRU[Hashable, Groups] = LRU(GROUP_CACHE_ENTRIES if cache_rows else 0)
        self._summaries: LRU[Hashable, Summary] = LRU(GROUP_CACHE_ENTRIES if cache_rows else 0)

    async def freshness(self) -> Freshness:
        return _freshness(await self.client.hgetall(f"{self.app_id}:watermark"))

    async def state(self, buckets: list[Bucket]) -> tuple[Freshness, list[Token]]:
        """How fresh the mirror is and the version of each bucket, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(f"{self.app_id}:watermark")
        pipe.mget(
            [f"{self.app_id}:mirror"] + [f"{self.app_id}:version:{g.value}:{start}" for g, start in buckets]
        )
        marks, replies = await pipe.execute()
        marker, versions = replies[0] or b"", replies[1:]
        return _freshness(marks), [None if version is None else (marker, version) for version in versions]

    async def summary(
        self, buckets: list[Bucket], tokens: list[Token], filters: Filters, group_by: tuple[str, ...]
    ) -> Summary:
        """The summed rows of ``buckets`` that ``filters`` admits, per group_by values and currency."""
        key = (filters, group_by, tuple(tokens))
        summary = self._summaries.get(key)
        if summary is None:
            summary = Summary(await self._groups_of(buckets, tokens, filters, group_by), group_by)
            self._summaries.put(key, summary)
            # The cache holds millions of small lists and tuples without reference cycles;
            # left to the cyclic collector they make every full collection scan them all
            # (seconds, at a month of a large deployment). Reference counting still frees
            # them when the cache lets go.
            gc.freeze()
        return summary

    async def _groups_of(
        self, buckets: list[Bucket], tokens: list[Token], filters: Filters, group_by: tuple[str, ...]
    ) -> Groups:
        present: list[tuple[Bucket, Token]] = [
            (bucket, token) for bucket, token in zip(buckets, tokens, strict=True) if token is not None
        ]
        if not present:
            return {}
        sources = _sources(filters)
        *older, newest = present
        prefix_key = (filters, group_by, tuple(older))
        prefix = self._groups.get(prefix_key)
        wanted: list[tuple[Bucket, Token]] = present if prefix is None else [newest]
        rows = await self._read(wanted, sources)
        parts = [group_rows(rows[bucket], group_by, filters) for bucket, _ in wanted]
        if prefix is None:
            # In key order, so that the merged result needs only a cheap re-sort.
            prefix = dict(sorted(merge_groups(parts[:-1]).items()))
            self._groups.put(prefix_key, prefix)
        return merge_groups([prefix, parts[-1]])

    async def _read(
        self, buckets: list[tuple[Bucket, Token]], sources: list[Source]
    ) -> dict[Bucket, list[SourceRow]]:
        """Rows of each bucket from the cache or, for the ones that moved, from Redis."""
        found: dict[Bucket, list[SourceRow]] = {bucket: [] for bucket, _ in buckets}
        missing = []
        for bucket, token in buckets:
            for source in sources:
                rows = self._rows.get((bucket, source, token))
                if rows is None:
                    missing.append((bucket, source, token))
                else:
                    found[bucket].extend(rows)
        if missing:
            for (bucket, source, token), rows in zip(missing, await self._fetch(missing), strict=True):
                self._rows.put((bucket, source, token), rows, len(rows) + 1)
                found[bucket].extend(rows)
        return found

    async def _fetch(self, wanted: list[tuple[Bucket, Source, Token]]) -> list[list[SourceRow]]:
        app = self.app_id
        customers_of: list[list[str]] = []
        if any(source[0] == "all" for _, source, _ in wanted):
            pipe = self.client.pipeline(transaction=False)
            for (g, start), source, _ in wanted:
                if source[0] == "all":
                    pipe.smembers(f"{app}:idx:{g.value}:{start}:customers")
            members = iter(await pipe.execute())
            customers_of = [
                sorted(member.decode() for member in next(members)) if source[0] == "all" else []
                for _, source, _ in wanted
            ]
        else:
            customers_of = [[] for _ in wanted]
        pipe = self.client.pipeline(transaction=False)
        plan: list[tuple[str, list[str]]] = []
        for ((g, start), (kind, name), _), customers in zip(wanted, customers_of, strict=True):
            prefix = f"{app}:rows:{g.value}:{start}"
            if kind == "d":
                pipe.hgetall(f"{prefix}:d:{name}")
                plan.append(("d", [name]))
            else:
                names = customers if kind == "all" else [name]
                for customer in names:
                    pipe.hgetall(f"{prefix}:c:{customer}")
                plan.append(("c", names))
        replies = iter(await pipe.execute())
        results: list[list[SourceRow]] = []
        for kind, names in plan:
            rows: list[SourceRow] = []
            for name in names:
                rows.extend(_parse(kind, name, next(replies)))
            results.append(rows)
        return results


def _freshness(marks: dict[bytes, bytes] | dict[bytes | str, bytes | str]) -> Freshness:
    documents = [orjson.loads(value) for value in marks.values()]
    if not documents:
        return Freshness(None, None, None)
    return Freshness(
        as_of_ms=min(mark["event_ms"] for mark in documents),
        stream_ms=max(mark["event_ms"] for mark in documents),
        written_ms=max(mark["written_ms"] for mark in documents),
    )


def _sources(filters: Filters) -> list[Source]:
    """The keys to read: named customers' hashes, named destinations' hashes, or everything."""
    if filters.customers is not None and len(filters.customers) <= MAX_NAMED_KEYS:
        return [("c", customer) for customer in sorted(filters.customers)]
    if filters.destinations is not None and len(filters.destinations) <= MAX_NAMED_KEYS:
        return [("d", destination) for destination in sorted(filters.destinations)]
    return [("all", "")]


def _parse(kind: str, name: str, fields: dict[bytes, bytes]) -> list[SourceRow]:
    """A customer hash (fields ``[destination, provider, currency]``) or a destination hash
    (fields ``[customer, provider, currency]``) as source rows."""
    loads = orjson.loads
    rows: list[SourceRow] = []
    for field, value in fields.items():
        if field[:1] != b"[":
            continue  # "@applied"
        first, provider, currency = loads(field)
        if kind == "c":
            rows.append((name, first, provider, currency, loads(value)))
        else:
            rows.append((first, name, provider, currency, loads(value)))
    return rows
