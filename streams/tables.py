"""The worker's Faust tables. Keys and values are bytes the core encodes itself (orjson),
so the changelog holds exactly what ``breakout.ledger`` wrote, and a flush writes each
touched customer-bucket once and the versions counted in a few large entries: the state
traffic is per bucket and per flush, never per CDR.

* ``rows``     ``<partition>|<m|h|d>|<bucket start>|<customer>`` → ``CustomerBucket``
* ``versions`` ``<partition>|<entry>`` → ``{"t": stream time, "o": offset, "v": [counted, …]}``,
  zstd-compressed (``streams.aggregator.decode_entry`` reads it, and the plain JSON of a
  worker from before the compression): the versions counted
  (``breakout.ledger.encode_counted``), entries numbered in the order written, the oldest
  dropped after the dedup window; ``streams.idstore`` indexes them
* ``progress`` ``<partition>`` → stream time and offset applied (the watermark), the newest
  offset whose flush the changelog had (where the partition is read from once assigned:
  ``streams.aggregator``), and the first and next ``versions`` entry numbers

Every key starts with the partition so a restored worker can find one partition's
state in any store, and so the memory store (one dict for all partitions) never mixes them.

Every changelog message the tables send is noted (``ChangelogSends``) until the broker
has it: a table flush is delivered once its own messages, and those sent before them, are
acknowledged (``streams.aggregator``, step 5).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import FutureMessage, TableT

BytesTable = TableT[bytes, bytes]


class ChangelogSends:
    """The tables' changelog messages the broker has not acknowledged yet, in the order sent.

    What a table flush waits for before its messages are acknowledged. Waiting instead
    until the producer had nothing left to send (Faust's ``flush``) waited for every flush
    made since too, and under steady live traffic, with a partition flushing every couple
    of seconds, the producer was seldom empty: deliveries took 7-9 s, the agent stopped
    for 2 s behind them every 10 s, and CDRs sent meanwhile showed up to 8 s late
    (``bench/freshness.py`` at 80 % of the backlog rate).
    """

    def __init__(self) -> None:
        self._sent: list[FutureMessage] = []

    def add(self, sent: FutureMessage) -> None:
        self._sent.append(sent)

    def delivered(self) -> Awaitable[None]:
        """Done once the broker has every message sent so far; raises if one failed.

        The messages are taken now, not when awaited. A failed one is kept, so every later
        delivery fails too: none may claim the changelog has what it lost.
        """
        self._sent = [sent for sent in self._sent if not _acknowledged(sent)]
        return _every(list(self._sent))


def _acknowledged(sent: FutureMessage) -> bool:
    return sent.done() and not sent.cancelled() and sent.exception() is None


async def _every(sent: list[FutureMessage]) -> None:
    for message in sent:
        await message


class _NotedTable(faust.Table[bytes, bytes]):
    """A Faust table whose changelog messages are noted in ``sends``."""

    def __init__(self, *args: Any, sends: ChangelogSends, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends = sends

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        sent: FutureMessage = super().send_changelog(*args, **kwargs)
        self.sends.add(sent)
        return sent


@dataclass(frozen=True)
class Tables:
    rows: BytesTable
    versions: BytesTable
    progress: BytesTable
    sends: ChangelogSends


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
    sends = ChangelogSends()

    def table(name: str, help: str, store: dict[str, int]) -> BytesTable:
        created = _NotedTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            key_type=bytes,  # bytes key and value types make Faust use the raw codec
            value_type=bytes,
            partitions=partitions,
            help=help,
            options=dict(store),  # a copy: Faust's store pops keys from it
            sends=sends,
        )
        app.tables.add(created)
        return created

    return Tables(
        rows=table("rows", "customer-bucket rows, with the offset each has absorbed", ROWS_STORE),
        versions=table(
            "versions", "CDR versions counted, in order, for revisions and de-duplication", SMALL_STORE
        ),
        progress=table("progress", "stream time and offset applied per partition", SMALL_STORE),
        sends=sends,
    )
