"""Tumbling buckets and their retention in stream time."""

from __future__ import annotations

import pytest

from breakout.buckets import GRANULARITIES, Granularity, Retention, bucket_start

M, H, D = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY
RETENTION = Retention(minute=172_800, hour=3_024_000, day=34_560_000)

TS_MS = 1_795_600_923_456  # 2026-11-25T10:02:03.456Z
MINUTE_START = 1_795_600_920  # 10:02:00Z
HOUR_START = 1_795_600_800  # 10:00:00Z
DAY_START = 1_795_564_800  # 00:00:00Z


def test_granularities() -> None:
    assert GRANULARITIES == (M, H, D)
    assert [(g.value, g.seconds) for g in GRANULARITIES] == [("m", 60), ("h", 3600), ("d", 86400)]
    assert Granularity("h") is H


@pytest.mark.parametrize(
    "start_ms, granularity, expected",
    [
        (TS_MS, M, MINUTE_START),
        (TS_MS, H, HOUR_START),
        (TS_MS, D, DAY_START),
        (1_795_600_920_000, M, 1_795_600_920),  # exactly on a boundary: its own bucket
        (1_795_600_919_999, M, 1_795_600_860),  # one ms before: the previous bucket
        (1_795_600_799_999, H, 1_795_597_200),
        (1_795_564_799_999, D, 1_795_478_400),
        (0, D, 0),
        (59_999, M, 0),
        (60_000, M, 60),
    ],
)
def test_bucket_start(start_ms: int, granularity: Granularity, expected: int) -> None:
    assert bucket_start(start_ms, granularity) == expected


@pytest.mark.parametrize(
    "granularity, expected",
    [(M, 172_800), (H, 3_024_000), (D, 34_560_000)],
)
def test_retention_of(granularity: Granularity, expected: int) -> None:
    assert RETENTION.of(granularity) == expected


@pytest.mark.parametrize(
    "granularity, start, expected",
    [
        (M, MINUTE_START, MINUTE_START + 60 + 172_800),
        (H, HOUR_START, HOUR_START + 3600 + 3_024_000),
        (D, DAY_START, DAY_START + 86400 + 34_560_000),
    ],
)
def test_expires_at(granularity: Granularity, start: int, expected: int) -> None:
    assert RETENTION.expires_at(granularity, start) == expected


@pytest.mark.parametrize(
    "granularity, start, stream_time, expected",
    [
        (M, MINUTE_START, MINUTE_START, False),
        (M, MINUTE_START, MINUTE_START + 60 + 172_800 - 1, False),  # one second before expiry
        (M, MINUTE_START, MINUTE_START + 60 + 172_800, True),  # at expiry
        (M, MINUTE_START, MINUTE_START + 60 + 172_800 + 1, True),
        (H, HOUR_START, HOUR_START + 3600 + 3_024_000 - 1, False),
        (H, HOUR_START, HOUR_START + 3600 + 3_024_000, True),
        (D, DAY_START, DAY_START + 86400 + 34_560_000 - 1, False),
        (D, DAY_START, DAY_START + 86400 + 34_560_000, True),
        (M, MINUTE_START, 0, False),  # stream time behind the bucket
    ],
)
def test_is_expired(granularity: Granularity, start: int, stream_time: int, expected: bool) -> None:
    assert RETENTION.is_expired(granularity, start, stream_time) is expected


@pytest.mark.parametrize(
    "retention, expected",
    [
        (RETENTION, 34_560_000 + 86400),
        (Retention(minute=0, hour=0, day=0), 86400),
        (Retention(minute=1_000_000, hour=0, day=0), 1_000_060),
        (Retention(minute=0, hour=100_000, day=0), 103_600),
    ],
)
def test_longest(retention: Retention, expected: int) -> None:
    assert retention.longest == expected
