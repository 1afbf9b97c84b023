"""What readers are told about the mirror's age: ``as_of`` and how far it trails the ingest."""

from __future__ import annotations

from api.reader import freshness_of
from breakout.redis_layout import Watermark


def test_behind_is_the_newest_ingested_minus_the_newest_mirrored_event_time() -> None:
    marks = {
        0: Watermark(event_ms=10_000, offset=5, written_ms=1, epoch="e", ingested_ms=12_500),
        1: Watermark(event_ms=11_000, offset=7, written_ms=2, epoch="e", ingested_ms=14_000),
    }
    freshness = freshness_of(marks)
    assert (freshness.as_of_ms, freshness.stream_ms, freshness.ingested_ms) == (10_000, 11_000, 14_000)
    assert freshness.behind_ms == 3_000


def test_behind_is_never_negative_and_unknown_without_an_ingest_report() -> None:
    ahead = {0: Watermark(event_ms=10_000, offset=5, written_ms=1, epoch="e", ingested_ms=9_000)}
    assert freshness_of(ahead).behind_ms == 0
    older_worker = {0: Watermark(event_ms=10_000, offset=5, written_ms=1, epoch="e")}
    assert freshness_of(older_worker).behind_ms is None
    nothing_yet = {0: Watermark(event_ms=0, offset=-1, written_ms=1, epoch="e", ingested_ms=9_000)}
    assert freshness_of(nothing_yet).behind_ms is None
