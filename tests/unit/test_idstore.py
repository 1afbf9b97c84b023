"""The id store's two implementations behave alike: lookups, guarded expiry, the mark, reset."""

from __future__ import annotations

from pathlib import Path

import pytest
from rocksdict import BlockBasedOptions, Options, Rdict

from breakout.ledger import encode_counted
from streams.idstore import MARK_KEY, IdIndex, Mark, MemoryIdIndex, RocksIdIndex, index_key

VERSION = [0, "p1", "UK", "EUR", 1_795_597_200_000, True, 60_000, 10, 15, 0]


@pytest.fixture(params=["memory", "rocksdb"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> IdIndex:
    if request.param == "memory":
        return MemoryIdIndex()
    return RocksIdIndex(tmp_path / "ids", 8 << 20)


def counted(cdr_id: str, offset: int, customer: str = "A") -> bytes:
    return encode_counted((customer, cdr_id), offset, 1_000 * offset, VERSION, None)


def test_lookups_find_what_was_written_per_partition_and_customer(index: IdIndex) -> None:
    assert index.mark(0) is None
    index.write(0, {("A", "x"): counted("x", 1)}, {}, Mark(1, 1, 1_000))
    assert index.get_many(0, [("A", "x"), ("B", "x"), ("A", "y")]) == [counted("x", 1), None, None]
    assert index.get_many(1, [("A", "x")]) == [None]
    assert index.mark(0) == Mark(1, 1, 1_000)


def test_expiry_drops_only_versions_stored_as_they_are(index: IdIndex) -> None:
    index.write(0, {("A", "x"): counted("x", 1), ("A", "y"): counted("y", 1)}, {}, Mark(1, 1, 1_000))
    index.write(0, {("A", "y"): counted("y", 2)}, {}, Mark(2, 2, 2_000))  # y counted again later
    expired = {("A", "x"): counted("x", 1), ("A", "y"): counted("y", 1)}
    index.write(0, {}, expired, Mark(2, 2, 2_000))
    assert index.get_many(0, [("A", "x"), ("A", "y")]) == [None, counted("y", 2)]


def test_reset_forgets_a_partition(index: IdIndex) -> None:
    index.write(0, {("A", "x"): counted("x", 1)}, {}, Mark(1, 1, 1_000))
    index.write(1, {("A", "x"): counted("x", 1)}, {}, Mark(1, 1, 1_000))
    index.reset(0)
    assert (index.mark(0), index.get_many(0, [("A", "x")])) == (None, [None])
    assert index.get_many(1, [("A", "x")]) == [counted("x", 1)]


def test_ids_spread_over_files_and_the_memtable_are_all_found(tmp_path: Path) -> None:
    """Live traffic leaves a partition's ids in several files and the memtable, each with a
    filter of its own: none of them may answer "never seen" for an id it holds."""
    index = RocksIdIndex(tmp_path / "ids", 8 << 20)
    try:
        written = {("A", f"id-{n}"): counted(f"id-{n}", n) for n in range(4_000)}
        items = list(written.items())
        for start in range(0, 3_000, 1_000):  # three files, then a memtable of the rest
            index.write(0, dict(items[start : start + 1_000]), {}, None)
            index._db(0).flush()
        index.write(0, dict(items[3_000:]), {}, None)
        assert index._db(0).property_int_value("rocksdb.num-files-at-level0") == 3
        new = [("A", f"new-{n}") for n in range(4_000)]
        assert index.get_many(0, [*written, *new]) == [*written.values(), *[None] * 4_000]
    finally:
        index.close()


def test_the_rocksdb_store_outlives_its_process(tmp_path: Path) -> None:
    first = RocksIdIndex(tmp_path / "ids", 8 << 20)
    first.write(3, {("A", "x"): counted("x", 1)}, {}, Mark(1, 1, 1_000))
    first.close()
    second = RocksIdIndex(tmp_path / "ids", 8 << 20)
    assert (second.mark(3), second.get_many(3, [("A", "x")])) == (Mark(1, 1, 1_000), [counted("x", 1)])


def test_a_store_written_before_partitioned_filters_opens_and_answers(tmp_path: Path) -> None:
    """An upgrade keeps its worker's data directory: files written with whole filters and a
    one-level index (the options before partitioned ones) are read as they are."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table)
    old = Rdict(str(tmp_path / "ids" / "0"), options)
    for n in range(5_000):
        old[index_key(("A", f"id-{n}"))] = counted(f"id-{n}", n)
    old[MARK_KEY] = b"[5000, 4999, 4999000]"
    old.flush()
    old.close()

    index = RocksIdIndex(tmp_path / "ids", 8 << 20)
    try:
        assert index.mark(0) == Mark(5_000, 4_999, 4_999_000)
        assert index.get_many(0, [("A", "id-0"), ("A", "id-4999"), ("A", "new")]) == [
            counted("id-0", 0),
            counted("id-4999", 4_999),
            None,
        ]
        index.write(0, {("A", "new"): counted("new", 5_000)}, {}, None)
        assert index.get_many(0, [("A", "new")]) == [counted("new", 5_000)]
    finally:
        index.close()
