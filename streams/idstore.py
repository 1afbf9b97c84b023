"""The id store: per partition, the version of each CDR counted within the dedup window.

It is an *index*, not the record: the ``versions`` table (``streams.tables``) holds every
counted version in the order counted, with its changelog, and the index is derived from it.
The index is what makes a lookup cheap — one RocksDB multi-get per internal message, bloom
filters answering "never seen" for new ids — while memory holds only RocksDB's bounded
block cache, whatever the number of ids.

The index is written only after the table writes it reflects are delivered to the
changelog (``streams.aggregator``, step 5), so it never knows a version the table could
lose. Each partition's index remembers up to which ``versions`` entry it is written (its
*mark*); when a partition is assigned, the aggregator compares the mark with the table and
indexes what is missing — nothing after an ordinary restart, everything after the local
state was lost (a new machine, a store deleted), or after a broker emptied.

``RocksIdIndex`` keeps one RocksDB per partition beside the Faust tables; ``MemoryIdIndex``
is the same in dictionaries, for the ``memory://`` store (whose tables are rebuilt from the
changelog at every start anyway) and the unit tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

import orjson
from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from breakout.ledger import VersionKey

# Ids are JSON arrays, so no id key starts with this byte.
MARK_KEY = b"\x00mark"
WRITE_BUFFER_BYTES = 4 << 20
# A bloom filter over each memtable's keys, this share of its size: most lookups are of new
# ids, which it answers without searching the memtable's skip list.
MEMTABLE_FILTER_RATIO = 0.1
METADATA_BLOCK_BYTES = 4096  # one partition of a filter or index


class Mark(NamedTuple):
    """The ``versions`` entry the index is written up to (exclusive), and that entry's identity."""

    next_seq: int
    offset: int  # the last offset the entry before ``next_seq`` covers (-1: none)
    stream_ms: int


def index_key(key: VersionKey) -> bytes:
    return orjson.dumps(key)


class IdIndex(Protocol):
    def get_many(self, partition: int, keys: list[VersionKey]) -> list[bytes | None]: ...

    def write(
        self,
        partition: int,
        versions: Mapping[VersionKey, bytes],
        expired: Mapping[VersionKey, bytes],
        mark: Mark | None,
    ) -> None:
        """Store ``versions`` (``encode_counted`` bytes), drop each of ``expired`` still stored
        as it is (a later version of the id stays), and move the mark (None: leave it),
        atomically."""
        ...

    def mark(self, partition: int) -> Mark | None: ...

    def reset(self, partition: int) -> None:
        """Forget everything of ``partition``: it is rebuilt from the table."""
        ...


class MemoryIdIndex:
    def __init__(self) -> None:
        self._partitions: dict[int, dict[bytes, bytes]] = {}
        self._marks: dict[int, Mark] = {}

    def get_many(self, partition: int, keys: list[VersionKey]) -> list[bytes | None]:
        stored = self._partitions.get(partition, {})
        return [stored.get(index_key(key)) for key in keys]

    def write(
        self,
        partition: int,
        versions: Mapping[VersionKey, bytes],
        expired: Mapping[VersionKey, bytes],
        mark: Mark | None,
    ) -> None:
        stored = self._partitions.setdefault(partition, {})
        for version_key, value in versions.items():
            stored[index_key(version_key)] = value
        for version_key, value in expired.items():
            key = index_key(version_key)
            if stored.get(key) == value:
                del stored[key]
        if mark is not None:
            self._marks[partition] = mark

    def mark(self, partition: int) -> Mark | None:
        return self._marks.get(partition)

    def reset(self, partition: int) -> None:
        self._partitions.pop(partition, None)
        self._marks.pop(partition, None)


class RocksIdIndex:
    """One RocksDB per partition under ``directory``, sharing one block cache."""

    def __init__(self, directory: Path, cache_bytes: int) -> None:
        self.directory = directory
        self._cache = Cache(cache_bytes)
        self._dbs: dict[int, Rdict] = {}

    def _options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Small memtables: an index is written in large batches once per table flush, and a
        # worker holds one per partition.
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        # Under live traffic a partition's ids are spread over its memtable and several
        # files, each asked in turn. The files have filters; without one of its own the
        # memtable was searched for every new id, about 1.5 of the 3-5 us such a lookup took
        # (docs/operations.md, "Live traffic"). Whole keys: the ids have no prefix to share.
        options.set_memtable_whole_key_filtering(True)
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_FILTER_RATIO)
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)  # most lookups are of new ids: answered without a read
        table.set_block_cache(self._cache)
        # Filters and indexes grow with the ids (about 3 MB per million): kept in the bounded
        # cache, not beside it. They are partitioned into small blocks under a pinned top
        # level: a whole file's filter grows larger than one shard of the cache (the cache
        # is split in 64), and was then read from disk again on every lookup, which made
        # lookups three times dearer by 4 million ids.
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(METADATA_BLOCK_BYTES)
        table.set_pin_top_level_index_and_filter(True)
        options.set_block_based_table_factory(table)
        return options

    def _db(self, partition: int) -> Rdict:
        db = self._dbs.get(partition)
        if db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = self._dbs[partition] = Rdict(str(self.directory / str(partition)), self._options())
        return db

    def get_many(self, partition: int, keys: list[VersionKey]) -> list[bytes | None]:
        found: list[bytes | None] = self._db(partition).get([index_key(key) for key in keys])  # type: ignore[assignment]
        return found

    def write(
        self,
        partition: int,
        versions: Mapping[VersionKey, bytes],
        expired: Mapping[VersionKey, bytes],
        mark: Mark | None,
    ) -> None:
        db = self._db(partition)
        batch = WriteBatch(raw_mode=True)
        if expired:
            keys = [index_key(key) for key in expired]
            stored_values: list[bytes | None] = db.get(keys)  # type: ignore[arg-type,assignment]
            for key, value, stored in zip(keys, expired.values(), stored_values, strict=True):
                if stored == value:
                    batch.delete(key)
        for version_key, value in versions.items():
            batch.put(index_key(version_key), value)
        if mark is not None:
            batch.put(MARK_KEY, orjson.dumps(list(mark)))
        db.write(batch)

    def mark(self, partition: int) -> Mark | None:
        raw = self._db(partition).get(MARK_KEY)
        return None if raw is None else Mark(*orjson.loads(raw))

    def reset(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        shutil.rmtree(self.directory / str(partition), ignore_errors=True)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
