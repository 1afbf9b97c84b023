"""``/v1/series`` and ``/v1/causes``: a selection's metrics over time and its SIP code mix.

Same parameters, scoping and completeness rules as ``/v1/breakout`` (a customer key sees
its own traffic and never providers; an incomplete mirror is a 503); the arithmetic is
``breakout.series``'s, the sums the reader's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from api.errors import error_responses
from api.params import SeriesParams, refuse_repeats
from api.reader import Freshness, MirrorReader
from api.reports import RangeParameters, iso_ms, today_of
from api.responses import OrjsonResponse
from api.schemas import Causes, Series
from api.security import Caller
from breakout.aggregate import Counters, empty
from breakout.aggregate import add as add_counters
from breakout.buckets import Retention
from breakout.errors import QueryError
from breakout.query import parse_range_query, parse_series_query
from breakout.series import cause_mix, point, previous_range, steps
from breakout.snapshot import Filters
from breakout.timerange import Bucket, TimeRange, check_retention, readable_cover

router = APIRouter(prefix="/v1", tags=["noc"])


def _series_params(request: Request, params: Annotated[SeriesParams, Query()]) -> SeriesParams:
    refuse_repeats(request, SeriesParams)
    return params


SeriesParameters = Annotated[SeriesParams, Depends(_series_params)]


def _stream_time(freshness: Freshness) -> tuple[int, int]:
    """(stream time, now) in epoch seconds: what retention is judged against."""
    now = int(datetime.now(UTC).timestamp())
    return (freshness.stream_ms // 1000 if freshness.stream_ms is not None else now), now


async def _totals(
    request: Request, buckets: list[Bucket], freshness: Freshness, filters: Filters
) -> dict[Bucket, Counters]:
    reader: MirrorReader = request.app.state.reader
    tokens = await reader.versions(buckets, freshness)
    return await reader.bucket_totals(buckets, tokens, filters)


def _sum(totals: dict[Bucket, Counters], buckets: Sequence[Bucket]) -> Counters:
    """The buckets' counters summed; one bucket's own list (read only) when it is alone."""
    if len(buckets) == 1:
        return totals[buckets[0]]
    total = empty()
    for bucket in buckets:
        add_counters(total, totals[bucket])
    return total


def _freshness_fields(freshness: Freshness, time_range: TimeRange) -> dict[str, Any]:
    return {
        "as_of": iso_ms(freshness.as_of_ms, time_range),
        "as_of_ms": freshness.as_of_ms,
        "behind_ms": freshness.behind_ms,
    }


@router.get(
    "/series",
    response_model=Series,
    summary="Metrics of a selection over time",
    description="One point per step of `resolution` over the range (no gaps; a step without traffic "
    "has 0 attempts and null ratios), each an exact sum of the stored buckets that tile it, with the "
    "same filters and key scoping as `/v1/breakout`. Ratios are rebuilt from each point's sums.",
    responses=error_responses(401, 403, 422, 503, refilling=True),
)
async def series(request: Request, role: Caller, params: SeriesParameters) -> Response:
    query = parse_series_query(params.values(), role, today_of(params))
    reader: MirrorReader = request.app.state.reader
    retention: Retention = request.app.state.retention
    freshness = await reader.freshness()
    stream_time, now = _stream_time(freshness)
    readable_cover(query.range, retention, stream_time, now)  # refuses a range past retention cheaply
    cut = steps(query.range, query.resolution)
    horizon = (now // 86400 + 3) * 86400  # no bucket after this can hold data (see readable_cover)
    wanted = [bucket for step in cut if step.start < horizon for bucket in step.buckets]
    check_retention(wanted, retention, stream_time)
    totals = await _totals(request, wanted, freshness, query.filters)
    nothing = empty()
    points = [
        point(step, _sum(totals, step.buckets) if step.start < horizon else nothing, query.metrics)
        for step in cut
    ]
    # Returned as is (the model documents it): a month of hours is 744 points to validate.
    return OrjsonResponse(
        {
            "from": query.range.iso(query.range.start),
            "to": query.range.iso(query.range.end),
            "tz": query.range.tz.key,
            "resolution": query.resolution,
            "metrics": list(query.metrics),
            **_freshness_fields(freshness, query.range),
            "points": points,
        }
    )


@router.get(
    "/causes",
    response_model=Causes,
    summary="The SIP code mix of a selection, against the period before",
    description="Attempts per final SIP code over the range and over the period of equal length just "
    "before it, with each code's share of attempts and its change in percentage points, what grew "
    "most first. `previous_attempts` and the previous figures are null when that period is beyond "
    "retention. Same filters and key scoping as `/v1/breakout`.",
    responses=error_responses(401, 403, 422, 503, refilling=True),
)
async def causes(request: Request, role: Caller, params: RangeParameters) -> dict[str, Any]:
    query = parse_range_query(params.values(), role, today_of(params))
    reader: MirrorReader = request.app.state.reader
    retention: Retention = request.app.state.retention
    freshness = await reader.freshness()
    stream_time, now = _stream_time(freshness)
    current = readable_cover(query.range, retention, stream_time, now)
    before = previous_range(query.range)
    try:
        previous: list[Bucket] | None = readable_cover(before, retention, stream_time, now)
    except QueryError:  # beyond retention: say there is no comparison, never compare with a part
        previous = None
    totals = await _totals(request, current + (previous or []), freshness, query.filters)
    now_counters = _sum(totals, current)
    before_counters = None if previous is None else _sum(totals, previous)
    return {
        "from": query.range.iso(query.range.start),
        "to": query.range.iso(query.range.end),
        "tz": query.range.tz.key,
        **_freshness_fields(freshness, query.range),
        "previous": {"from": before.iso(before.start), "to": before.iso(before.end)},
        "attempts": now_counters[0],
        "previous_attempts": None if before_counters is None else before_counters[0],
        "codes": cause_mix(now_counters, before_counters),
    }
