"""What the size of internal messages costs the agent: the same CDRs applied in live-sized
and in backlog-sized messages, in-process, no Kafka and no Redis.

    .venv/bin/python bench/apply.py [--cdrs 200000] [--live 1000] [--backlog 5000] [--runs 5]

Under live traffic the ingest step sends each internal partition a message per poll, about
1,000 CDRs at 16,000 CDR/s, from some 250 customers; draining a backlog, 5,000. Part of the
agent's work is per customer and message (three bucket keys, staging the buckets for the
mirror, merging their changed rows), so it is paid about five times as often live. This
times ``Aggregator.apply`` with the mirror's staging (``RedisMirror.stage``) on the mix of
``bench/ingest.py`` (1,000 customers, 30 prefixes and 3 providers each, 4 partitions),
both sizes taking turns, and prints the medians and their ratio: what grouping the
messages waiting for the agent would save, at most. Table flushes, the id store and the
mirror's writes are left out (their cost does not depend on the message size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from breakout.buckets import Retention
from breakout.destinations import load_dial_codes
from breakout.ledger import BucketKey, CustomerBucket, RowId
from breakout.normalize import Record, internal_messages, normalize_message
from breakout.settings import Settings
from breakout.synthetic import Profile, cdr_stream
from streams.aggregator import Aggregator
from streams.collector import tune_gc
from streams.idstore import MemoryIdIndex
from streams.mirror import RedisMirror

PARTITIONS = 4
PROFILE = Profile(customers=1_000, prefixes_per_customer=30, providers_per_customer=3)
# The mirror takes what was staged about twice a second: so many buckets at 16,000 CDR/s.
STAGED_PER_FLUSH = 12_000


class Tables:
    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.versions: dict[bytes, bytes] = {}
        self.progress: dict[bytes, bytes] = {}


class StagingMirror:
    """``RedisMirror``'s staging, with a fresh one every ``STAGED_PER_FLUSH`` buckets staged
    standing for a mirror flush taking what was staged."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.staged = 0
        self.mirror = self._fresh()

    def _fresh(self) -> RedisMirror:
        return RedisMirror("redis://localhost:1", "bench", self.retention, Counter())

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None:
        self.mirror.stage(key, bucket, rows)
        self.staged += 1
        if self.staged % STAGED_PER_FLUSH == 0:
            self.mirror = self._fresh()

    def forget(self, partition: int) -> None:
        self.mirror.forget(partition)


class Held:
    def ack(self) -> bool:
        return True


def records(count: int) -> list[list[Record]]:
    """``count`` validated CDRs of live traffic (event time now), per internal partition."""
    dial_codes = load_dial_codes(None)
    now_ms = int(time.time() * 1000)
    per_partition: list[list[Record]] = [[] for _ in range(PARTITIONS)]
    for cdr in cdr_stream(seed=3, start_time=time.time(), rate=16_000, profile=PROFILE):
        valid, _ = normalize_message(
            orjson.dumps(cdr), dial_codes=dial_codes, default_currency="USD", now_ms=now_ms + 60_000
        )
        for record in valid:
            per_partition[zlib.crc32(record.customer_id.encode()) % PARTITIONS].append(record)
        count -= len(valid)
        if count <= 0:
            return per_partition
    raise AssertionError("the stream is endless")


def messages(per_partition: list[list[Record]], size: int) -> list[tuple[int, bytes]]:
    """Messages of ``size`` CDRs, the partitions taking turns as the agent sees them."""
    split = [
        [
            internal_messages(part[start : start + size], max_records=size, max_bytes=1 << 30)[0]
            for start in range(0, len(part), size)
        ]
        for part in per_partition
    ]
    longest = max(len(part) for part in split)
    return [(p, split[p][n]) for n in range(longest) for p in range(PARTITIONS) if n < len(split[p])]


def default_retention() -> Retention:
    """The retention a worker keeps by default (``breakout.settings``), with no environment read."""
    fields = Settings.model_fields
    return Retention(
        *(fields[name].default for name in ("minute_retention", "hour_retention", "day_retention"))
    )


def apply_all(ordered: list[tuple[int, bytes]]) -> float:
    """Seconds to apply ``ordered`` in a fresh aggregator, staging for a mirror."""
    retention = default_retention()
    mirror = StagingMirror(retention)
    aggregator = Aggregator(
        Tables(),
        mirror,
        retention,
        86_400_000,
        Counter(),
        ids=MemoryIdIndex(),
        table_flush_seconds=60,
    )
    offsets = [0] * PARTITIONS
    began = time.perf_counter()
    for partition, value in ordered:
        aggregator.apply(partition, offsets[partition], value, Held())
        offsets[partition] += 1
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cdrs", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=1_000, help="CDRs per message, live")
    parser.add_argument("--backlog", type=int, default=5_000, help="CDRs per message, backlog")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for name in ("cdrs", "live", "backlog", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    tune_gc()
    per_partition = records(args.cdrs)
    total = sum(len(part) for part in per_partition)
    shapes = {"live": messages(per_partition, args.live), "backlog": messages(per_partition, args.backlog)}
    timings: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(args.runs):
        for name, ordered in shapes.items():
            timings[name].append(apply_all(ordered) / total * 1e6)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, ordered in shapes.items():
        runs = " / ".join(f"{value:.1f}" for value in timings[name])
        print(f"{name:8s} {len(ordered):5d} messages: {medians[name]:.1f} us a CDR (median; runs {runs})")
    print(f"live / backlog: {medians['live'] / medians['backlog']:.2f}x, {total:,} CDRs")


if __name__ == "__main__":
    main()
