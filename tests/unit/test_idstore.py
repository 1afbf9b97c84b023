"""The id store's two implementations behave alike: lookups, guarded expiry, the mark, reset."""

from __future__ import annotations

from pathlib import Path

import pytest

from breakout.ledger import encode_counted
from streams.idstore import IdIndex, Mark, MemoryIdIndex, RocksIdIndex

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


def test_the_rocksdb_store_outlives_its_process(tmp_path: Path) -> None:
    first = RocksIdIndex(tmp_path / "ids", 8 << 20)
    first.write(3, {("A", "x"): counted("x", 1)}, {}, Mark(1, 1, 1_000))
    first.close()
    second = RocksIdIndex(tmp_path / "ids", 8 << 20)
    assert (second.mark(3), second.get_many(3, [("A", "x")])) == (Mark(1, 1, 1_000), [counted("x", 1)])
