"""Metrics over time and the SIP code mix of a selection: the NOC's "what changed, and when".

A series splits a report's range into steps of a resolution (a minute, 15 minutes, an hour
or a day, aligned to the reader's time zone), each answered from the stored buckets that
tile it exactly, so every point is an exact sum like any report row; a point's ratios are
rebuilt from its own sums. The cause comparison sets a range's SIP code shares beside those
of the period of equal length just before it. Pure functions: the read API sums buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from operator import itemgetter
from typing import Any

from breakout.aggregate import ATTEMPTS, Counters
from breakout.errors import QueryError
from breakout.snapshot import TRAFFIC, rounded, sip_codes
from breakout.timerange import Bucket, TimeRange, cover

RESOLUTIONS = {"minute": 60, "15m": 900, "hour": 3600, "day": 86400}
METRICS = (
    "attempts",
    "connected",
    "asr",
    "ner",
    "acd",
    "pdd",
    "short_calls",
    "short_pct",
    "duration",
    "dtmf",
    "dtmf_pct",
)
DEFAULT_METRICS = ("attempts", "asr", "ner", "acd", "pdd")
MAX_POINTS = 10_000  # a week of minutes; more is not a chart, and each point is a sum

# What each SIP code of the catalogue means, for the cause panel and alerts.
SIP_REASONS = {
    "200": "OK",
    "403": "Forbidden",
    "404": "Not Found",
    "408": "Request Timeout",
    "480": "Temporarily Unavailable",
    "484": "Address Incomplete",
    "486": "Busy Here",
    "487": "Request Terminated",
    "488": "Not Acceptable Here",
    "500": "Server Internal Error",
    "502": "Bad Gateway",
    "503": "Service Unavailable",
    "504": "Server Time-out",
    "603": "Decline",
    "1xx": "Other provisional",
    "2xx": "Other success",
    "3xx": "Other redirection",
    "4xx": "Other client failure",
    "5xx": "Other server failure",
    "6xx": "Other global failure",
    "none": "No SIP code in the CDR",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One point's time: ``[start, end)`` in epoch seconds, as the reader's zone shows it,
    and the buckets that tile it."""

    start: int
    end: int
    buckets: tuple[Bucket, ...]
    start_text: str
    end_text: str


def default_resolution(time_range: TimeRange) -> str:
    """The finest resolution that keeps a chart of the range readable (at most a few hundred points)."""
    length = time_range.end - time_range.start
    if length <= 6 * 3600:
        return "minute"
    if length <= 2 * 86400:
        return "15m"
    if length <= 35 * 86400:
        return "hour"
    return "day"


@lru_cache(maxsize=256)
def steps(time_range: TimeRange, resolution: str) -> tuple[Step, ...]:
    """The range cut at every boundary of ``resolution`` in the reader's time zone.

    Days are calendar days there (23 or 25 hours across a DST change); shorter steps follow
    the zone's offset, so hours in Asia/Kolkata begin at :30 UTC (and are tiled by minute
    buckets). A range starting or ending between boundaries gets a shorter first or last step.
    Remembered per range, since a portal re-asks the same one on every Refresh.
    """
    size = RESOLUTIONS[resolution]
    bounds = [time_range.start]
    at = time_range.start
    while at < time_range.end:
        at = min(_next_boundary(at, size, time_range), time_range.end)
        bounds.append(at)
        if len(bounds) > MAX_POINTS + 1:
            raise QueryError(
                f"resolution: {resolution} gives more than {MAX_POINTS} points for this range; "
                "use a coarser resolution or a shorter range"
            )
    texts = [time_range.iso(bound) for bound in bounds]
    return tuple(
        Step(start, end, tuple(cover(start, end)), texts[index], texts[index + 1])
        for index, (start, end) in enumerate(pairwise(bounds))
    )


def _next_boundary(at: int, size: int, time_range: TimeRange) -> int:
    local = datetime.fromtimestamp(at, time_range.tz)
    if size == 86400:
        following = date(local.year, local.month, local.day) + timedelta(days=1)
        return int(datetime(following.year, following.month, following.day, tzinfo=time_range.tz).timestamp())
    offset = int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
    return at - (at + offset) % size + size


def parse_metrics(asked: list[str]) -> tuple[str, ...]:
    """The metrics named (repeatable or comma-separated), in the order given, each once."""
    names = [name.strip() for text in asked for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise QueryError(f"metric: {unknown[0]!r} is not a series metric; use some of {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names)) or DEFAULT_METRICS


def parse_resolution(text: str | None, time_range: TimeRange) -> str:
    if text is None or text == "":
        return default_resolution(time_range)
    if text not in RESOLUTIONS:
        raise QueryError(f"resolution: expected one of {', '.join(RESOLUTIONS)}, got {text!r}")
    return text


def point(step: Step, counters: Counters, metrics: tuple[str, ...]) -> dict[str, Any]:
    """One point as the API shows it: its times in the reader's zone and only the metrics asked
    (a month of hours is 744 points: each computes what it shows, nothing more)."""
    out: dict[str, Any] = {"start": step.start_text, "end": step.end_text}
    for name in metrics:
        out[name] = TRAFFIC[name](counters)
    return out


def cause_mix(now: Counters, before: Counters | None) -> list[dict[str, Any]]:
    """Each SIP code's count and share of attempts now and in the previous period, what grew most first.

    ``before`` is None when the previous period is beyond retention: no comparison then.
    Shares are percent of attempts (``none`` included, so they add up to 100); growth is
    compared exactly, as fractions, and a code without a comparison comes last.
    """
    current = sip_codes(now)
    previous = sip_codes(before) if before is not None else {}
    ranked: list[tuple[tuple[int, Fraction, int, str], dict[str, Any]]] = []
    for code in dict.fromkeys([*current, *previous]):
        count = current.get(code, 0)
        row: dict[str, Any] = {
            "code": code,
            "label": SIP_REASONS[code],
            "count": count,
            "share": rounded(100 * count, now[ATTEMPTS]),
            "previous_count": None,
            "previous_share": None,
            "change_points": None,
        }
        growth: Fraction | None = None
        if before is not None:
            earlier = previous.get(code, 0)
            row["previous_count"] = earlier
            row["previous_share"] = rounded(100 * earlier, before[ATTEMPTS])
            if now[ATTEMPTS] and before[ATTEMPTS]:
                growth = Fraction(100 * count, now[ATTEMPTS]) - Fraction(100 * earlier, before[ATTEMPTS])
                row["change_points"] = rounded(growth.numerator, growth.denominator)
        order = (1, Fraction(0), -count, code) if growth is None else (0, -growth, -count, code)
        ranked.append((order, row))
    ranked.sort(key=itemgetter(0))
    return [row for _, row in ranked]


def previous_range(time_range: TimeRange) -> TimeRange:
    """The period of equal length that ends where ``time_range`` begins."""
    length = time_range.end - time_range.start
    return TimeRange(time_range.start - length, time_range.start, time_range.tz)
