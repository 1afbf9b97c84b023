"""The worker's Faust tables. Keys and values are bytes the core encodes itself (orjson),
so the changelog holds exactly what ``breakout.ledger`` wrote, and a flush writes each
touched customer-bucket once and the versions counted in a few large entries: the state
traffic is per bucket and per flush, never per CDR.

* ``rows``     ``<partition>|<m|h|d>|<bucket start>|<customer>`` → ``CustomerBucket``
* ``versions`` ``<partition>|<entry>`` → ``{"t": stream time, "o": offset, "v": [counted, …]}``:
  the versions counted (``breakout.ledger.encode_counted``), entries numbered in the order
  written, the oldest dropped after the dedup window; ``streams.idstore`` indexes them
* ``progress`` ``<partition>`` → stream time and offset applied (the watermark), the newest
  offset whose flush the changelog had (where the partition is read from once assigned:
  ``streams.aggregator``), and the first and next ``versions`` entry numbers

Every key starts with the partition so a restored worker can find one partition's
state in any store, and so the memory store (one dict for all partitions) never mixes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT

BytesTable = TableT[bytes, bytes]


@dataclass(frozen=True)
class Tables:
    rows: BytesTable
    versions: BytesTable
    progress: BytesTable


# RocksDB memory per table and partition (Faust's defaults are up to three 64 MB memtables and
# a 2 GB block cache each): ``versions`` takes ~150 bytes per CDR in large sequential writes
# and is read only to expire or rebuild, ``progress`` is one key; ``rows`` is read on every
# bucket the worker's own cache misses.
SMALL_STORE = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 4 << 20}
ROWS_STORE = {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}


TABLE_NAMES = ("rows", "versions", "progress")


def changelog_topics(app_id: str) -> tuple[str, ...]:
    """The tables' changelog topics, as Faust names them."""
    return tuple(f"{app_id}-{name}-changelog" for name in TABLE_NAMES)


def create_tables(app: faust.App, partitions: int) -> Tables:
    def table(name: str, help: str, store: dict[str, int]) -> BytesTable:
        return app.Table(
            name,
            key_type=bytes,  # bytes key and value types make Faust use the raw codec
            value_type=bytes,
            partitions=partitions,
            help=help,
            options=dict(store),  # a copy: Faust's store pops keys from it
        )

    return Tables(
        rows=table("rows", "customer-bucket rows, with the offset each has absorbed", ROWS_STORE),
        versions=table(
            "versions", "CDR versions counted, in order, for revisions and de-duplication", SMALL_STORE
        ),
        progress=table("progress", "stream time and offset applied per partition", SMALL_STORE),
    )
