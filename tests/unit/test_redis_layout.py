"""The mirror's contract with its readers: key names, watermarks, completeness and lag."""

from __future__ import annotations

import pytest

from breakout.buckets import Granularity
from breakout.redis_layout import REPORT_STALE_MS, STALL_MS, Lag, Layout, Watermark, completeness
from breakout.settings import load_settings
from streams.lag import LagReporter

EPOCH = "e1"


def mark(epoch: str = EPOCH) -> Watermark:
    return Watermark(event_ms=1, offset=2, written_ms=3, epoch=epoch)


def test_customer_key_names_round_trip_any_customer() -> None:
    layout = Layout("app")
    key = layout.customer_rows(Granularity.HOUR, 3600, "cust:with:colons")
    assert key == "app:rows:h:3600:c:cust:with:colons"
    assert layout.parse_customer_rows(key) == (Granularity.HOUR, 3600, "cust:with:colons")


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
