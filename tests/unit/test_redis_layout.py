"""The mirror's contract with its readers: key names, watermarks, completeness and lag."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from breakout.buckets import Granularity
from breakout.noc import keys
from breakout.redis_layout import (
    REPORT_STALE_MS,
    STALL_MS,
    Lag,
    Layout,
    Watermark,
    completeness,
    joined_epoch,
    shard_markers,
)
from breakout.settings import load_settings
from streams.lag import LagReporter

EPOCH = "e1"


def mark(epoch: str = EPOCH) -> Watermark:
    return Watermark(event_ms=1, offset=2, written_ms=3, epoch=epoch)


def test_customer_key_names_round_trip_any_customer() -> None:
    layout = Layout("app")
    for customer in ("cust:with:colons", "{braces}:c:x", "}"):
        key = layout.customer_rows(Granularity.HOUR, 3600, customer)
        assert key == "{app:h:3600}:c:" + customer
        assert layout.parse_customer_rows(key) == (Granularity.HOUR, 3600, customer)


def test_a_buckets_keys_share_one_slot_and_the_apps_keys_another() -> None:
    """What lets a bucket's write be one script on one cluster shard: every key it names
    hashes to the slot of the bucket's tag, whatever the customer or destination."""
    layout = Layout("app")
    g, start = Granularity.MINUTE, 120
    bucket_keys = [
        layout.customer_rows(g, start, "{other}"),
        layout.destination_rows(g, start, "UK - Mobile"),
        layout.customers(g, start),
        layout.destinations(g, start),
        layout.version(g, start),
        layout.customer_rows_prefix(g, start) + "x",
    ]
    assert {key_slot(key.encode()) for key in bucket_keys} == {key_slot(b"app:m:120")}
    app_keys = [layout.marker, layout.watermarks, layout.lag, layout.counters("w"), layout.buckets(g)]
    app_keys += [keys.active_key("app"), keys.history_key("app"), keys.cursor_key("app")]
    app_keys += [keys.state_key("app"), keys.snapshot_key("app", 60)]
    assert {key_slot(key.encode()) for key in app_keys} == {key_slot(b"app")}
    assert key_slot(layout.version(g, start + 60).encode()) != key_slot(layout.version(g, start).encode())


def test_one_epoch_key_per_shard_whatever_the_shards_are_called() -> None:
    layout = Layout("app")
    assert shard_markers(layout, []) == [layout.marker]
    assert shard_markers(layout, ["a"] * 16384) == [layout.marker]
    owners = ["a"] * 5461 + ["b"] * 5461 + ["c"] * 5462
    found = shard_markers(layout, owners)
    assert found[0] == layout.marker and len(found) == 3
    assert {owners[key_slot(key.encode())] for key in found} == {"a", "b", "c"}
    renamed = [{"a": "x", "b": "y", "c": "z"}[owner] for owner in owners]  # a failover
    assert shard_markers(layout, renamed) == found
    with_gap: list[str | None] = [*owners[:100], *([None] * 100), *owners[200:]]
    assert len(shard_markers(layout, with_gap)) == 3


def test_the_epoch_is_every_shards_value_and_none_when_one_is_missing() -> None:
    assert joined_epoch([b"e1"]) == "e1"
    assert joined_epoch([b"e1", "e2"]) == "e1,e2"
    assert joined_epoch([b"e1", None]) is None


def test_watermark_round_trips_and_reads_the_older_format() -> None:
    assert Watermark.decode(mark().encode()) == mark()
    ingested = Watermark(event_ms=1, offset=2, written_ms=3, epoch=EPOCH, ingested_ms=9)
    assert Watermark.decode(ingested.encode()) == ingested
    older = Watermark.decode(b'{"event_ms":1,"offset":2,"written_ms":3}')
    assert older.epoch == "" and older.ingested_ms is None


@pytest.mark.parametrize(
    "marker, marks, missing, complete",
    [
        (None, {0: mark(), 1: mark()}, (0, 1), False),  # Redis emptied: the marker went too
        (b"e1", {0: mark(), 1: mark()}, (), True),
        (b"e1", {0: mark()}, (1,), False),  # partition 1 not mirrored yet
        (b"e1", {0: mark(), 1: mark("e0")}, (1,), False),  # written in an earlier epoch
        (b"e2", {0: mark(), 1: mark()}, (0, 1), False),  # a new epoch: nothing whole in it yet
    ],
)
def test_completeness(
    marker: bytes | None, marks: dict[int, Watermark], missing: tuple[int, ...], complete: bool
) -> None:
    found = completeness(marker, marks, 2)
    assert (found.missing, found.complete) == (missing, complete)
    assert complete or "refill" in found.explain() or "no data" in found.explain()


@pytest.mark.parametrize(
    "end, committed, moved_ago, written_ago, stalled",
    [
        (10, 10, STALL_MS * 5, 0, False),  # no lag: an idle partition is not stalled
        (10, 4, STALL_MS - 1, 0, False),  # lag, but it moved within the minute
        (10, 4, STALL_MS + 1, 0, True),  # lag that has not moved for a minute
        (10, 10, 0, REPORT_STALE_MS + 1, True),  # no report: the worker is silent
    ],
)
def test_lag_stalled(end: int, committed: int, moved_ago: int, written_ago: int, stalled: bool) -> None:
    now = 10_000_000
    lag = Lag("cdrs", 0, end, committed, now - moved_ago, now - written_ago)
    assert lag.stalled(now) is stalled
    assert Lag.decode(lag.encode()) == lag


def test_lag_reporter_remembers_when_each_committed_offset_last_moved() -> None:
    reporter = LagReporter(load_settings(), {}, dict)
    tp = ("cdrs", 0)
    (first,) = reporter.lags({tp: 100}, {tp: 40}, now_ms=1_000)
    (same,) = reporter.lags({tp: 120}, {tp: 40}, now_ms=9_000)
    (moved,) = reporter.lags({tp: 120}, {tp: 60}, now_ms=10_000)
    (fresh,) = reporter.lags({tp: 0}, {}, now_ms=11_000)  # nothing committed, nothing to read
    assert (first.lag, first.moved_ms) == (60, 1_000)
    assert (same.lag, same.moved_ms) == (80, 1_000)
    assert (moved.lag, moved.moved_ms) == (60, 10_000)
    assert (fresh.lag, fresh.committed) == (0, 0)
