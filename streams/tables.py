"""The worker's Faust tables. Keys and values are bytes the core encodes itself (orjson),
so the changelog holds exactly what ``breakout.ledger`` wrote, and one table write per
touched customer-bucket per message is the whole per-batch state traffic.

* ``rows``     ``<partition>|<m|h|d>|<bucket start>|<customer>`` → ``CustomerBucket``
* ``seen``     ``<partition>|<offset>`` → ids counted by that message (the dedup index)
* ``progress`` ``<partition>`` → stream time and offset applied (the watermark)

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
    seen: BytesTable
    progress: BytesTable


def create_tables(app: faust.App, partitions: int) -> Tables:
    def table(name: str, help: str) -> BytesTable:
        return app.Table(
            name,
            key_type=bytes,  # bytes key and value types make Faust use the raw codec
            value_type=bytes,
            partitions=partitions,
            help=help,
        )

    return Tables(
        rows=table("rows", "customer-bucket rows, with the offset each has absorbed"),
        seen=table("seen", "CDR ids counted per message, for de-duplication"),
        progress=table("progress", "stream time and offset applied per partition"),
    )
