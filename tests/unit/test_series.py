"""Series steps, their buckets, and the cause comparison: pure arithmetic, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from breakout.aggregate import add as add_counters
from breakout.aggregate import counters_of, empty, row_of, sip_slot, widened
from breakout.buckets import Granularity
from breakout.errors import QueryError
from breakout.series import (
    DEFAULT_METRICS,
    MAX_POINTS,
    cause_mix,
    default_resolution,
    parse_metrics,
    parse_resolution,
    point,
    previous_range,
    steps,
)
from breakout.timerange import TimeRange

M, H = Granularity.MINUTE, Granularity.HOUR


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def utc_range(start: str, end: str, tz: str = "UTC") -> TimeRange:
    return TimeRange(epoch(start), epoch(end), ZoneInfo(tz))


def test_hours_of_a_utc_day_are_hour_buckets() -> None:
    cut = steps(utc_range("2026-11-27T00:00+00:00", "2026-11-28T00:00+00:00"), "hour")
    assert len(cut) == 24
    assert [step.buckets for step in cut[:2]] == [((H, cut[0].start),), ((H, cut[0].start + 3600),)]
    assert all(step.end - step.start == 3600 for step in cut)


def test_hours_in_a_half_hour_zone_start_at_half_past_utc_and_come_from_minutes() -> None:
    cut = steps(utc_range("2026-11-27T00:00+05:30", "2026-11-27T03:00+05:30", "Asia/Kolkata"), "hour")
    assert [datetime.fromtimestamp(step.start, UTC).strftime("%H:%M") for step in cut] == [
        "18:30",
        "19:30",
        "20:30",
    ]
    assert cut[0].buckets == tuple((M, cut[0].start + 60 * i) for i in range(60))


def test_days_follow_the_calendar_across_a_dst_change() -> None:
    cut = steps(utc_range("2026-03-28T00:00+00:00", "2026-03-31T00:00+01:00", "Europe/London"), "day")
    assert [step.end - step.start for step in cut] == [86400, 82800, 86400]  # the 29th has 23 hours


def test_a_range_between_boundaries_gets_short_edge_steps() -> None:
    cut = steps(utc_range("2026-11-27T00:10+00:00", "2026-11-27T01:20+00:00"), "15m")
    assert [(step.end - step.start) // 60 for step in cut] == [5, 15, 15, 15, 15, 5]
    assert cut[0].buckets == tuple((M, cut[0].start + 60 * i) for i in range(5))


def test_every_step_tiles_its_time_exactly() -> None:
    for resolution in ("minute", "15m", "hour", "day"):
        time_range = utc_range("2026-11-26T22:07+00:00", "2026-11-28T03:00+00:00", "America/New_York")
        if resolution == "minute":
            time_range = utc_range("2026-11-26T22:07+00:00", "2026-11-27T01:00+00:00")
        cut = steps(time_range, resolution)
        assert cut[0].start == time_range.start and cut[-1].end == time_range.end
        for step, following in pairwise(cut):
            assert step.end == following.start
        for step in cut:
            assert sum(granularity.seconds for granularity, _ in step.buckets) == step.end - step.start


def test_too_many_points_is_a_clear_refusal() -> None:
    days = (MAX_POINTS // 1440) + 1
    with pytest.raises(QueryError, match="more than 10000 points"):
        steps(TimeRange(0, days * 86400, ZoneInfo("UTC")), "minute")


@pytest.mark.parametrize(
    "hours, expected",
    [(1, "minute"), (6, "minute"), (7, "15m"), (48, "15m"), (49, "hour"), (840, "hour"), (841, "day")],
)
def test_the_default_resolution_keeps_a_chart_readable(hours: int, expected: str) -> None:
    time_range = TimeRange(0, hours * 3600, ZoneInfo("UTC"))
    assert default_resolution(time_range) == expected == parse_resolution(None, time_range)


def test_resolution_and_metrics_are_checked() -> None:
    time_range = TimeRange(0, 3600, ZoneInfo("UTC"))
    with pytest.raises(QueryError, match="resolution: expected one of minute, 15m, hour, day, got 'week'"):
        parse_resolution("week", time_range)
    with pytest.raises(QueryError, match="metric: 'profit' is not a series metric"):
        parse_metrics(["asr", "profit"])
    assert parse_metrics([]) == DEFAULT_METRICS
    assert parse_metrics(["ner,asr", "asr", "pdd"]) == ("ner", "asr", "pdd")


def test_a_point_shows_the_metrics_asked_rebuilt_from_its_sums() -> None:
    total = empty()
    add_counters(
        total, row_of(counters_of(True, 60_000, 1, 2, 0, effective=True, pdd_ms=2_000), sip_slot(200))
    )
    add_counters(total, row_of(counters_of(False, 0, 0, 0, 0, effective=True, pdd_ms=3_001), sip_slot(486)))
    add_counters(total, row_of(counters_of(False, 0, 0, 0, 0, effective=False, pdd_ms=None), sip_slot(503)))
    time_range = utc_range("2026-11-27T00:00+00:00", "2026-11-27T01:00+00:00")
    [step] = steps(time_range, "hour")
    assert point(step, total, ("attempts", "asr", "ner", "pdd", "acd")) == {
        "start": "2026-11-27T00:00:00+00:00",
        "end": "2026-11-27T01:00:00+00:00",
        "attempts": 3,
        "asr": "33.33",
        "ner": "66.67",
        "pdd": "2.50",  # 5,001 ms over the 2 calls that carried one
        "acd": "60.00",
    }
    assert point(step, empty(), ("asr", "pdd")) == {
        "start": "2026-11-27T00:00:00+00:00",
        "end": "2026-11-27T01:00:00+00:00",
        "asr": None,
        "pdd": None,
    }


def codes(attempts: int, **by_code: int) -> list[int]:
    row = widened([attempts])
    for code, count in by_code.items():
        row[sip_slot(int(code.removeprefix("c")))] += count
    return row


def test_causes_put_what_grew_most_first() -> None:
    now = codes(100, c503=60, c486=20, c200=10)  # 10 without a code
    before = codes(200, c503=2, c486=40, c200=120)  # 38 without a code
    mix = cause_mix(now, before)
    assert [row["code"] for row in mix] == ["503", "486", "none", "200"]  # +59, 0, -9, -50 points
    assert mix[0] == {
        "code": "503",
        "label": "Service Unavailable",
        "count": 60,
        "share": "60.00",
        "previous_count": 2,
        "previous_share": "1.00",
        "change_points": "59.00",
    }
    assert mix[-1]["change_points"] == "-50.00"


def test_causes_without_a_previous_period_say_so() -> None:
    mix = cause_mix(codes(10, c503=4), None)
    assert [(row["code"], row["share"], row["previous_share"], row["change_points"]) for row in mix] == [
        ("none", "60.00", None, None),
        ("503", "40.00", None, None),
    ]


def test_a_code_gone_since_the_previous_period_is_shown_at_zero() -> None:
    mix = cause_mix(codes(10, c200=10), codes(10, c200=5, c404=5))
    assert {row["code"]: (row["count"], row["previous_count"], row["change_points"]) for row in mix} == {
        "200": (10, 5, "50.00"),
        "404": (0, 5, "-50.00"),
    }


def test_the_previous_period_has_the_same_length() -> None:
    time_range = utc_range("2026-11-27T00:00+00:00", "2026-11-27T06:00+00:00")
    before = previous_range(time_range)
    assert (before.start, before.end) == (time_range.start - 6 * 3600, time_range.start)
