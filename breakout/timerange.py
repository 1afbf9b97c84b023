"""The time range of a report: parsed in the reader's time zone, covered by stored buckets.

Buckets are UTC minutes, hours and days. A range is answered from the coarsest buckets
that tile it exactly — whole UTC days inside, hours and then minutes at the edges — so a
13-month report reads about 400 keys and a 15-minute one reads 15, and neither is ever
rounded to a bucket boundary. A range in a zone whose offset is not whole hours (India,
+05:30) starts mid-hour in UTC, so its edges come from minute buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from breakout.buckets import Granularity, Retention
from breakout.errors import QueryError

Bucket = tuple[Granularity, int]  # (size, start in epoch seconds)
_COARSEST_FIRST = (Granularity.DAY, Granularity.HOUR, Granularity.MINUTE)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start, end)`` in epoch seconds (UTC), and the zone the reader asked in."""

    start: int
    end: int
    tz: ZoneInfo

    def iso(self, epoch: int) -> str:
        return datetime.fromtimestamp(epoch, self.tz).isoformat()


def parse_tz(text: str | None) -> ZoneInfo:
    """An IANA zone name (default UTC)."""
    name = text or "UTC"
    try:
        if name.startswith(("/", ".")) or ".." in name or len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise QueryError(f"tz: unknown time zone {name!r}; use an IANA name such as Europe/London") from None


def _parse_bound(name: str, text: str, tz: ZoneInfo, *, is_end: bool) -> int:
    """A date (whole day, in ``tz``) or an ISO datetime on a whole minute → epoch seconds.

    A date as ``to`` is inclusive: the range runs to the end of that day.
    """
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise QueryError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None
        if is_end:
            if day == date.max:
                raise QueryError(
                    f"{name}: {text!r} includes its whole day, which ends in the year 10000, past the "
                    "calendar; end the range at 9999-12-31T23:59 at the latest"
                )
            day += timedelta(days=1)
        moment = datetime(day.year, day.month, day.day, tzinfo=tz)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise QueryError(
                f"{name}: {text!r} is neither a date (YYYY-MM-DD) nor an ISO datetime (YYYY-MM-DDTHH:MM)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    epoch = moment.timestamp()
    if not _on_calendar(epoch, tz):
        raise QueryError(_outside_calendar(name, text, tz))
    if epoch % 60:  # also a date in a zone's local mean time, centuries ago (London: -0:01:15)
        raise QueryError(
            f"{name}: {text!r} is not on a whole minute in UTC; the finest buckets are one minute"
        )
    return int(epoch)


def _on_calendar(epoch: float, tz: ZoneInfo) -> bool:
    """Whether ``epoch`` is a datetime both in UTC and in ``tz``.

    A bound is shown in UTC (retention messages) and in ``tz`` (the answer's ``from`` and
    ``to``), and an offset can carry a moment the parser accepts (``0001-01-01T00:00+14:00``,
    ``9999-12-31T23:00-05:00``) past either end of the calendar: refused here, it is a 422
    instead of a crash wherever it would be shown.
    """
    try:
        datetime.fromtimestamp(epoch, UTC)
        datetime.fromtimestamp(epoch, tz)
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _outside_calendar(name: str, text: str, tz: ZoneInfo) -> str:
    where = "UTC" if tz.key == "UTC" else f"UTC and in {tz.key}"
    return (
        f"{name}: {text!r} is outside the calendar, which runs from 0001-01-01 00:00 "
        f"to 9999-12-31 23:59 in {where}"
    )


def parse_range(from_text: str | None, to_text: str | None, tz: ZoneInfo, today: date) -> TimeRange:
    """``from``/``to`` as the API takes them. No ``from``: today; no ``to``: the ``from`` date
    (one day), or the end of today after a ``from`` datetime."""
    from_text = from_text or today.isoformat()
    start = _parse_bound("from", from_text, tz, is_end=False)
    if to_text:
        end = _parse_bound("to", to_text, tz, is_end=True)
    elif len(from_text) == 10:  # one day, whose end `from` names
        to_text, end = from_text, _parse_bound("from", from_text, tz, is_end=True)
    else:
        to_text = today.isoformat()
        end = _parse_bound("to", to_text, tz, is_end=True)
    if start >= end:
        raise QueryError(f"from ({from_text}) must be before to ({to_text})")
    return TimeRange(start, end, tz)


def cover(start: int, end: int) -> list[Bucket]:
    """The coarsest buckets that tile ``[start, end)`` exactly; both ends on whole minutes."""
    buckets: list[Bucket] = []
    at = start
    while at < end:
        for granularity in _COARSEST_FIRST:
            size = granularity.seconds
            if at % size == 0 and at + size <= end:
                buckets.append((granularity, at))
                at += size
                break
    return buckets


def readable_cover(time_range: TimeRange, retention: Retention, stream_time: int, now: int) -> list[Bucket]:
    """The buckets to read for ``time_range``, refusing one that reaches beyond retention.

    Checked on the range before tiling it, so a range of centuries costs nothing. The end
    is cut at two days past ``now``: the workers refuse CDRs more than a day in the future,
    so no bucket after that can hold data.
    """
    oldest_kept = stream_time - retention.longest
    if time_range.start < oldest_kept:
        check_retention([(Granularity.DAY, time_range.start // 86400 * 86400)], retention, stream_time)
    horizon = (now // 86400 + 3) * 86400
    buckets = cover(time_range.start, min(time_range.end, max(horizon, time_range.start)))
    check_retention(buckets, retention, stream_time)
    return buckets


def check_retention(buckets: list[Bucket], retention: Retention, stream_time: int) -> None:
    """Refuse a range that needs a bucket already expired: a partial sum would look whole."""
    for granularity, start in buckets:
        if retention.is_expired(granularity, start, stream_time):
            kept_from = stream_time - retention.of(granularity) - granularity.seconds
            oldest = _first_kept(granularity, kept_from)
            when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise QueryError(
                f"the range reaches beyond retention: it needs {_NAMES[granularity]} totals at {when}, "
                f"and those are kept only from {oldest}"
                + ("" if granularity is Granularity.DAY else _HINT[granularity])
            )


def _first_kept(granularity: Granularity, kept_from: int) -> str:
    """The first bucket start after ``kept_from`` (buckets starting there have expired)."""
    size = granularity.seconds
    first = (kept_from // size + 1) * size
    return datetime.fromtimestamp(first, UTC).strftime("%Y-%m-%d %H:%M UTC")


_NAMES = {Granularity.MINUTE: "per-minute", Granularity.HOUR: "hourly", Granularity.DAY: "daily"}
_HINT = {
    Granularity.MINUTE: "; older ranges must start and end on whole UTC hours (in a half-hour zone such as "
    "Asia/Kolkata a date starts at :30 UTC: use tz=UTC or datetimes on whole UTC hours)",
    Granularity.HOUR: "; for older ranges use dates with tz=UTC, whose days are stored whole",
}
