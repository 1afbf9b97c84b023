"""Report ranges: parsing in a zone, the coarsest exact cover, retention refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from breakout.buckets import Granularity, Retention
from breakout.errors import QueryError
from breakout.timerange import check_retention, cover, parse_range, parse_tz, readable_cover

M, H, D = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY
TODAY = date(2026, 11, 25)


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (
            "2026-11-01T00:00+00:00",
            "2026-11-03T00:00+00:00",
            [(D, "2026-11-01T00:00+00:00"), (D, "2026-11-02T00:00+00:00")],
        ),
        (
            "2026-11-01T23:58+00:00",
            "2026-11-02T00:01+00:00",
            [(M, "2026-11-01T23:58+00:00"), (M, "2026-11-01T23:59+00:00"), (M, "2026-11-02T00:00+00:00")],
        ),
        (
            "2026-11-01T22:00+00:00",
            "2026-11-03T01:00+00:00",
            [
                (H, "2026-11-01T22:00+00:00"),
                (H, "2026-11-01T23:00+00:00"),
                (D, "2026-11-02T00:00+00:00"),
                (H, "2026-11-03T00:00+00:00"),
            ],
        ),
        (
            "2026-11-01T10:15+00:00",
            "2026-11-01T10:30+00:00",
            [(M, f"2026-11-01T10:{m}+00:00") for m in range(15, 30)],
        ),
    ],
)
def test_cover_uses_the_coarsest_buckets_that_tile_the_range(
    start: str, end: str, expected: list[tuple[Granularity, str]]
) -> None:
    assert cover(epoch(start), epoch(end)) == [(g, epoch(s)) for g, s in expected]


def test_cover_of_thirteen_months_is_days_plus_edges() -> None:
    buckets = cover(epoch("2025-10-25T07:30+00:00"), epoch("2026-11-25T12:45+00:00"))
    kinds = [g for g, _ in buckets]
    assert kinds.count(D) == 395 and kinds.count(H) == 16 + 12 and kinds.count(M) == 30 + 45
    # Contiguous and exact.
    at = epoch("2025-10-25T07:30+00:00")
    for granularity, start in buckets:
        assert start == at
        at += granularity.seconds
    assert at == epoch("2026-11-25T12:45+00:00")


@pytest.mark.parametrize(
    ("from_text", "to_text", "tz", "start", "end"),
    [
        (None, None, "UTC", "2026-11-25T00:00+00:00", "2026-11-26T00:00+00:00"),
        ("2026-11-01", None, "UTC", "2026-11-01T00:00+00:00", "2026-11-02T00:00+00:00"),
        ("2026-11-01", "2026-11-03", "Europe/London", "2026-11-01T00:00+00:00", "2026-11-04T00:00+00:00"),
        ("2026-07-01", "2026-07-01", "Europe/London", "2026-07-01T00:00+01:00", "2026-07-02T00:00+01:00"),
        ("2026-11-01", "2026-11-01", "Asia/Kolkata", "2026-11-01T00:00+05:30", "2026-11-02T00:00+05:30"),
        # The spring-forward day is 23 hours long.
        ("2026-03-29", "2026-03-29", "Europe/London", "2026-03-29T00:00+00:00", "2026-03-30T00:00+01:00"),
        (
            "2026-11-25T10:00",
            "2026-11-25T10:15",
            "Asia/Kolkata",
            "2026-11-25T10:00+05:30",
            "2026-11-25T10:15+05:30",
        ),
        (
            "2026-11-25T10:00Z",
            "2026-11-25T12:00+01:00",
            "Asia/Kolkata",
            "2026-11-25T10:00+00:00",
            "2026-11-25T11:00+00:00",
        ),
    ],
)
def test_parse_range(from_text: str | None, to_text: str | None, tz: str, start: str, end: str) -> None:
    time_range = parse_range(from_text, to_text, parse_tz(tz), TODAY)
    assert (time_range.start, time_range.end) == (epoch(start), epoch(end))


@pytest.mark.parametrize(
    ("from_text", "to_text", "message"),
    [
        ("2026-11-02", "2026-11-01", "must be before"),
        ("2026-11-25T10:00Z", "2026-11-25T10:00Z", "must be before"),
        ("2026-02-30", None, "is not a date"),
        ("25/11/2026", None, "is not a date"),
        ("2026-11-25 at noon", None, "neither a date"),
        ("2026-11-25T10:00:30", None, "whole minute"),
        ("2026-11-25", "tomorrow", "neither a date"),
    ],
)
def test_parse_range_refuses(from_text: str, to_text: str | None, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_range(from_text, to_text, parse_tz("UTC"), TODAY)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "", "utc+1"])
def test_parse_tz_refuses_unknown_zones(name: str) -> None:
    if name == "":
        assert parse_tz(name).key == "UTC"
        return
    with pytest.raises(QueryError, match="unknown time zone"):
        parse_tz(name)


RETENTION = Retention(minute=48 * 3600, hour=35 * 86400, day=400 * 86400)
NOW = epoch("2026-11-25T12:00+00:00")


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-23T12:00+00:00", "2026-11-23T12:30+00:00", None),  # minutes within 48 h
        ("2026-11-23T11:59+00:00", "2026-11-23T12:30+00:00", "per-minute totals"),
        ("2026-10-30T10:00+00:00", "2026-10-30T11:00+00:00", None),
        ("2026-10-01T10:00+00:00", "2026-10-01T11:00+00:00", "hourly totals"),
        ("2025-11-01T00:00+00:00", "2025-11-02T00:00+00:00", None),
        ("2025-01-01T00:00+00:00", "2025-01-02T00:00+00:00", "daily totals"),
    ],
)
def test_retention(start: str, end: str, message: str | None) -> None:
    buckets = cover(epoch(start), epoch(end))
    if message is None:
        check_retention(buckets, RETENTION, NOW)
    else:
        with pytest.raises(QueryError, match=message):
            check_retention(buckets, RETENTION, NOW)


def test_retention_message_says_from_when_data_is_kept() -> None:
    with pytest.raises(QueryError) as caught:
        check_retention(
            cover(epoch("2026-10-01T10:00+00:00"), epoch("2026-10-01T11:00+00:00")), RETENTION, NOW
        )
    first_hour = datetime.fromtimestamp(NOW - 35 * 86400, UTC)  # its bucket ends 35 days before now
    assert first_hour.strftime("%Y-%m-%d %H:%M UTC") in str(caught.value)


@pytest.mark.parametrize(
    ("from_text", "to_text", "tz", "message"),
    [
        ("9999-12-31", None, "UTC", "from: '9999-12-31' includes its whole day"),
        ("0001-01-01T00:00", None, "UTC", None),  # parses; retention refuses it below
        (None, None, "a" * 300, "unknown time zone"),
        (None, None, "Etc/GMT+14", "unknown time zone"),
    ],
)
def test_extreme_bounds_are_refused_cleanly(
    from_text: str | None, to_text: str | None, tz: str, message: str | None
) -> None:
    if message is None:
        parse_range(from_text, to_text, parse_tz(tz), TODAY)
        return
    with pytest.raises(QueryError, match=message):
        parse_range(from_text, to_text, parse_tz(tz), TODAY)


def test_readable_cover_refuses_centuries_before_tiling_and_stops_after_tomorrow() -> None:
    ancient = parse_range("0001-01-01", "9999-12-30", parse_tz("UTC"), TODAY)
    with pytest.raises(QueryError, match="beyond retention"):
        readable_cover(ancient, RETENTION, NOW, NOW)
    future = parse_range("2026-11-24", "9999-12-30", parse_tz("UTC"), TODAY)
    buckets = readable_cover(future, RETENTION, NOW, NOW)
    assert buckets[0] == (D, epoch("2026-11-24T00:00+00:00")) and len(buckets) == 4


# Calendar edges: ±14 h is the widest offset in use (Etc/GMT-14 is UTC+14, Etc/GMT+12 is UTC-12).
@pytest.mark.parametrize(
    ("from_text", "to_text", "tz"),
    [
        ("0001-01-01", None, "UTC"),
        ("0001-01-01T00:00", "0001-01-01T00:01", "UTC"),
        ("0001-01-01T14:00+14:00", "0001-01-02", "UTC"),
        ("0001-01-01", None, "Etc/GMT+12"),
        ("0001-01-01T00:00-14:00", "0001-01-02", "Etc/GMT+12"),
        ("9999-12-30", "9999-12-30", "UTC"),
        ("9999-12-30", "9999-12-30", "Etc/GMT+12"),
        ("9999-12-31T00:00", "9999-12-31T23:59", "UTC"),
        ("9999-12-31T00:00", "9999-12-31T23:59", "Etc/GMT-14"),
        ("9999-12-31T09:59Z", "9999-12-31T09:59-14:00", "UTC"),
    ],
)
def test_ranges_at_the_calendar_edges_are_read_and_shown(
    from_text: str, to_text: str | None, tz: str
) -> None:
    """Shown as the answer's from/to (in tz), the CSV file name (last minute) and retention
    messages (UTC); read by the retention check and the cover."""
    time_range = parse_range(from_text, to_text, parse_tz(tz), TODAY)
    for epoch in (time_range.start, time_range.end, time_range.end - 1):
        time_range.iso(epoch)
        datetime.fromtimestamp(epoch, UTC)
    if time_range.start < NOW:
        with pytest.raises(QueryError, match="beyond retention"):
            readable_cover(time_range, RETENTION, NOW, NOW)
    else:
        assert readable_cover(time_range, RETENTION, NOW, NOW) == []  # no bucket so far ahead


@pytest.mark.parametrize(
    ("from_text", "to_text", "tz", "message"),
    [
        ("0001-01-01", None, "Etc/GMT-14", "from: '0001-01-01' is outside the calendar"),
        ("0001-01-01T00:00", None, "Etc/GMT-14", "from: '0001-01-01T00:00' is outside the calendar"),
        ("0001-01-01T00:00+14:00", "0001-01-02", "UTC", "from: .* is outside the calendar"),
        ("0001-01-01T13:59+14:00", "0001-01-02", "UTC", "from: .* is outside the calendar"),
        ("9999-12-31", None, "UTC", "from: '9999-12-31' includes its whole day"),
        ("9999-12-31", None, "Etc/GMT+12", "from: '9999-12-31' includes its whole day"),
        ("9999-12-30", "9999-12-31", "Etc/GMT-14", "to: '9999-12-31' includes its whole day"),
        ("9999-12-31T00:00", "9999-12-31T23:01-14:00", "UTC", "to: .* is outside the calendar"),
        ("9999-12-31T10:00Z", "9999-12-31T11:00Z", "Etc/GMT-14", "from: .* in UTC and in Etc/GMT-14"),
        ("2026-11-01", "9999-12-31T23:00-05:00", "Europe/London", "to: .* is outside the calendar"),
        ("1800-01-01", None, "Europe/London", "whole minute"),  # local mean time: UTC-0:01:15
    ],
)
def test_ranges_past_the_calendar_are_refused_naming_the_bound(
    from_text: str, to_text: str | None, tz: str, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        parse_range(from_text, to_text, parse_tz(tz), TODAY)
