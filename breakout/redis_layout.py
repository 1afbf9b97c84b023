"""The Redis key layout of the mirror and the encoding of what it stores: the one home of both.

The worker's mirror writes these keys, and the read API, the alert detector, ``/metrics``,
the benchmarks and the tests read them; every one of them builds names and decodes values
here, so the layout can change in one place. ``docs/redis-layout.md`` is the human version.

Completeness is part of the contract: Redis is a cache that can be emptied at any moment
(restarted without persistence, flushed, failed over to an empty replica), and a reader
must be able to tell a whole mirror from a partial one. Every worker write happens under an
*epoch*, the random value of ``{app}:mirror`` that the first write into an empty Redis
creates; a partition's watermark names the epoch in which its owner mirrored it whole. The
mirror is complete when the marker exists and every partition's watermark carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.crc import key_slot

from breakout.aggregate import widened
from breakout.buckets import Granularity

# A customer-bucket hash also holds the internal-topic offset its values include.
APPLIED_FIELD = b"@applied"
Row = tuple[str, str, str, list[int]]  # (customer or destination, provider, currency, counters)

# How long a worker's last report may be old before readers call the worker silent, and how
# long consumer lag may go without progress before readers call the worker stalled.
REPORT_STALE_MS = 30_000
STALL_MS = 60_000


@dataclass(frozen=True, slots=True)
class Layout:
    """Key names for one app id (``BREAKOUT_APP_ID``).

    Names carry Redis Cluster hash tags (the part in braces decides the slot), so every
    command and script touches one slot: the app's own keys (marker, watermarks, lag,
    counters, bucket index, alerts) share the tag ``{app}``, and each bucket's keys (its
    customer and destination hashes, indexes and version) share ``{app:g:start}``. A
    bucket's writes are then one script call on one shard, and buckets spread over shards.
    On a single Redis the braces are just characters.
    """

    app_id: str

    @property
    def tag(self) -> str:
        """The hash tag of the app's own keys."""
        return "{" + self.app_id + "}"

    @property
    def keys_pattern(self) -> str:
        """SCAN pattern of every key of this app (``{app}…`` and ``{app:…}…``), no other app's."""
        return "{" + self.app_id + "[}:]*"

    @property
    def marker(self) -> str:
        """The mirror's epoch: created by the first write into an empty Redis."""
        return f"{self.tag}:mirror"

    def shard_marker(self, n: int) -> str:
        """A further epoch key, one per Redis Cluster shard (``shard_markers``)."""
        return "{" + f"{self.app_id}:mirror:{n}" + "}"

    @property
    def watermarks(self) -> str:
        """Hash: internal-topic partition → ``Watermark`` JSON."""
        return f"{self.tag}:watermark"

    @property
    def lag(self) -> str:
        """Hash: ``<topic>|<partition>`` → ``Lag`` JSON, as last reported by a worker."""
        return f"{self.tag}:lag"

    def counters(self, worker: str) -> str:
        """Hash: one worker process's counters (accepted, rejected by reason, …)."""
        return f"{self.tag}:counters:{worker}"

    @property
    def counters_pattern(self) -> str:
        return f"{self.tag}:counters:*"

    def bucket_tag(self, granularity: Granularity, start: int) -> str:
        """The hash tag of one bucket's keys."""
        return "{" + f"{self.app_id}:{granularity.value}:{start}" + "}"

    def customer_rows(self, granularity: Granularity, start: int, customer: str) -> str:
        """Hash: one customer's rows of one bucket, ``[destination, provider, currency]`` → counters."""
        return f"{self.bucket_tag(granularity, start)}:c:{customer}"

    def customer_rows_prefix(self, granularity: Granularity, start: int) -> str:
        """``customer_rows(granularity, start, c)`` is this + ``c``: a reader naming a bucket's
        thousands of customer hashes builds the prefix once, not one f-string per customer."""
        return self.customer_rows(granularity, start, "")

    def destination_rows(self, granularity: Granularity, start: int, destination: str) -> str:
        """Hash: one destination's rows of one bucket, ``[customer, provider, currency]`` → counters."""
        return f"{self.bucket_tag(granularity, start)}:d:{destination}"

    def destination_rows_prefix(self, granularity: Granularity, start: int) -> str:
        """``destination_rows(granularity, start, d)`` is this + ``d`` (as ``customer_rows_prefix``)."""
        return self.destination_rows(granularity, start, "")

    def rows(self, granularity: Granularity, start: int, kind: str, name: str) -> str:
        """A customer (``kind`` ``c``) or destination (``d``) hash of one bucket."""
        return f"{self.bucket_tag(granularity, start)}:{kind}:{name}"

    @property
    def customer_rows_pattern(self) -> str:
        """SCAN pattern of every customer hash (tests and tools; readers use the indexes)."""
        return "{" + self.app_id + ":*}:c:*"

    def parse_customer_rows(self, key: str) -> tuple[Granularity, int, str]:
        """``(granularity, start, customer)`` of a customer-hash name."""
        tag, _, customer = key[len(self.app_id) + 2 :].partition("}:c:")
        granularity, start = tag.split(":")
        return Granularity(granularity), int(start), customer

    def customers(self, granularity: Granularity, start: int) -> str:
        """Set: the customers with rows in the bucket."""
        return f"{self.bucket_tag(granularity, start)}:customers"

    def destinations(self, granularity: Granularity, start: int) -> str:
        """Set: the destinations with rows in the bucket."""
        return f"{self.bucket_tag(granularity, start)}:destinations"

    def written(self, granularity: Granularity, start: int, token: str) -> str:
        """String: set by one write of the bucket, read back to learn that it ran (a
        transaction's replies are turned off: ``streams.bucket_writes``)."""
        return f"{self.bucket_tag(granularity, start)}:written:{token}"

    def buckets(self, granularity: Granularity) -> str:
        """Sorted set: the bucket starts that hold data."""
        return f"{self.tag}:buckets:{granularity.value}"

    def version(self, granularity: Granularity, start: int) -> str:
        """String: bumped by every write that changes the bucket (readers cache until it moves)."""
        return f"{self.bucket_tag(granularity, start)}:version"


def shard_markers(layout: Layout, slot_owners: Sequence[str | None]) -> list[str]:
    """The epoch keys of a Redis whose slot ``i`` is served by shard ``slot_owners[i]``.

    A single Redis (``slot_owners`` empty) has one, the marker. A cluster shard can restart
    empty while the others keep their data, so each shard holds an epoch key of its own:
    the marker on the shard of ``{app}``, and on each other shard the first
    ``shard_marker(n)`` whose slot it serves. The mirror's epoch is all of their values
    (``joined_epoch``), so losing any shard is a new epoch, as losing a single Redis is.
    The keys depend only on which slots share a shard, not on the shards' names, so a
    failover to a replica keeps them; moving slots between shards may pick new ones, and
    that is a new epoch (the workers write everything again).
    """
    if not slot_owners:
        return [layout.marker]
    pending = set(slot_owners) - {None, slot_owners[key_slot(layout.marker.encode())]}
    others: list[str] = []
    n = 0
    while pending:
        key = layout.shard_marker(n)
        owner = slot_owners[key_slot(key.encode())]
        if owner in pending:
            pending.discard(owner)
            others.append(key)
        n += 1
    return [layout.marker, *sorted(others)]


def joined_epoch(values: list[bytes | str | None]) -> str | None:
    """The mirror's epoch from its epoch keys' values, in ``shard_markers`` order (None: one
    is missing, so that shard lost its data or was never written)."""
    if any(value is None for value in values):
        return None
    return ",".join(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def json_text(value: bytes) -> str:
    """orjson's JSON text as Redis's Lua ``cjson`` writes it, which also escapes ``/`` and DEL.

    Row fields were first written by ``cjson.encode`` inside the mirror's script; the worker
    now builds them itself and must write the very same field names, or a row written before
    an upgrade and after it would be two fields of one hash, summed twice. Neither character
    can occur inside an escape sequence orjson writes, so replacing them is exact.
    """
    text = value.decode()
    if "/" in text or "\x7f" in text:
        text = text.replace("/", "\\/").replace("\x7f", "\\u007f")
    return text


def encode_row_field(first: str, provider: str, currency: str) -> str:
    """A row's hash field: ``[destination, provider, currency]`` in a customer hash,
    ``[customer, provider, currency]`` in a destination hash, as JSON (any names, no escaping
    scheme of our own, in ``json_text``'s spelling). The worker's mirror writes the same."""
    return json_text(orjson.dumps([first, provider, currency]))


def encode_counters(counters: list[int]) -> bytes:
    """A row's value: its counters as a JSON array of integers (``docs/redis-layout.md``)."""
    return orjson.dumps(counters)


def decode_rows(fields: dict[bytes, bytes]) -> list[Row]:
    """Every row of a customer or destination hash read with ``HGETALL`` (not ``@applied``)."""
    loads = orjson.loads
    rows: list[Row] = []
    for field, value in fields.items():
        if field[:1] == b"[":  # not "@applied"
            first, provider, currency = loads(field)
            rows.append((first, provider, currency, widened(loads(value))))
    return rows


@dataclass(frozen=True, slots=True)
class Watermark:
    """One internal-topic partition's progress in the mirror.

    ``event_ms`` is the partition's stream time and ``offset`` the last message applied;
    ``epoch`` is the mirror epoch in which the partition was written whole (every row its
    owner holds), ``written_ms`` the wall-clock time of the write. ``ingested_ms`` is the
    newest CDR event time the owner's ingest step had committed then (None: none yet):
    how far ahead of the mirror the pipeline has read, so a reader sees a worker that
    ingests but falls behind in aggregating or mirroring.
    """

    event_ms: int
    offset: int
    written_ms: int
    epoch: str
    ingested_ms: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "event_ms": self.event_ms,
                "offset": self.offset,
                "written_ms": self.written_ms,
                "epoch": self.epoch,
                "ingested_ms": self.ingested_ms,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Watermark:
        document: dict[str, Any] = orjson.loads(raw)
        return cls(
            document["event_ms"],
            document["offset"],
            document["written_ms"],
            document.get("epoch", ""),
            document.get("ingested_ms"),
        )


@dataclass(frozen=True, slots=True)
class Completeness:
    """Whether the mirror holds every partition's rows in the current epoch, and which not."""

    epoch: str | None
    missing: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return self.epoch is not None and not self.missing

    def explain(self) -> str:
        if self.epoch is None:
            return (
                "the Redis mirror holds no data yet (new, restarted or flushed); the workers are refilling it"
            )
        listed = ", ".join(str(p) for p in self.missing[:16]) + (" …" if len(self.missing) > 16 else "")
        return f"the Redis mirror is being refilled: partitions {listed} are not mirrored whole yet"


def completeness(
    marker: bytes | str | None, watermarks: dict[int, Watermark], partitions: int
) -> Completeness:
    """Which of ``partitions`` internal-topic partitions are mirrored whole under the current epoch."""
    if marker is None:
        return Completeness(None, tuple(range(partitions)))
    epoch = marker.decode() if isinstance(marker, bytes) else marker
    missing = tuple(
        p for p in range(partitions) if (mark := watermarks.get(p)) is None or mark.epoch != epoch
    )
    return Completeness(epoch, missing)


def decode_watermarks(fields: dict[bytes, bytes] | dict[Any, Any]) -> dict[int, Watermark]:
    """The watermark hash as read with ``HGETALL``."""
    return {int(p): Watermark.decode(raw) for p, raw in fields.items()}


@dataclass(frozen=True, slots=True)
class Lag:
    """One consumed partition as a worker last saw it: end offset, committed offset, progress.

    ``moved_ms`` is when the committed offset last moved (or the lag was last zero), so a
    reader can tell a busy worker from one that is alive but making no progress.
    """

    topic: str
    partition: int
    end: int
    committed: int
    moved_ms: int
    written_ms: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)

    def field(self) -> str:
        return f"{self.topic}|{self.partition}"

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "topic": self.topic,
                "partition": self.partition,
                "end": self.end,
                "committed": self.committed,
                "moved_ms": self.moved_ms,
                "written_ms": self.written_ms,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Lag:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(d["topic"], d["partition"], d["end"], d["committed"], d["moved_ms"], d["written_ms"])

    def stalled(self, now_ms: int) -> bool:
        """Lag that has not shrunk for ``STALL_MS``, or a report older than ``REPORT_STALE_MS``."""
        silent = now_ms - self.written_ms > REPORT_STALE_MS
        return silent or (self.lag > 0 and now_ms - self.moved_ms > STALL_MS)
