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
from api.reader import LRU, Freshness, MirrorReader, Token
from api.reports import RangeParameters, iso_ms, today_of
from api.responses import OrjsonResponse
from api.schemas import Causes, Series
from api.security import Caller
from breakout.aggregate import Counters, empty
from breakout.aggregate import add as add_counters
from breakout.buckets import Retention
from breakout.errors import QueryError
from breakout.query import parse_range_query, parse_series_query
from breakout.series import Step, cause_mix, point, previous_range, steps
from breakout.snapshot import Filters
from breakout.timerange import Bucket, TimeRange, check_retention, readable_cover

router = APIRouter(prefix="/v1", tags=["noc"])


async def _series_params(request: Request, params: Annotated[SeriesParams, Query()]) -> SeriesParams:
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


# The last answer's points per (range, resolution, filters, metrics), with the versions of
# the buckets they summed (one per bucket read, in step order).
SeriesPoints = LRU[tuple[TimeRange, str, Filters, tuple[str, ...]], tuple[list[Token], list[dict[str, Any]]]]


async def _points(
    reader: MirrorReader,
    cut: tuple[Step, ...],
    horizon: int,
    wanted: list[Bucket],
    tokens: list[Token],
    before: tuple[list[Token], list[dict[str, Any]]] | None,
    filters: Filters,
    metrics: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Every step's point: the one ``before`` had where its buckets' versions are the same,
    else summed anew. ``wanted`` are the buckets of the steps before ``horizon``, in order;
    later steps have none that can hold data."""
    reuse = before is not None and len(before[0]) == len(tokens) and len(before[1]) == len(cut)
    points: list[dict[str, Any] | None] = []
    missing: list[tuple[int, Step]] = []
    at = 0
    for index, step in enumerate(cut):
        if step.start >= horizon:
            points.append(point(step, empty(), metrics))
            continue
        end = at + len(step.buckets)
        if reuse and before is not None and before[0][at:end] == tokens[at:end]:
            points.append(before[1][index])
        else:
            points.append(None)
            missing.append((index, step))
        at = end
    if missing:
        moved = [bucket for _, step in missing for bucket in step.buckets]
        where = dict(zip(wanted, tokens, strict=True))
        totals = await reader.bucket_totals(moved, [where[bucket] for bucket in moved], filters)
        for index, step in missing:
            points[index] = point(step, _sum(totals, step.buckets), metrics)
    return [shown for shown in points if shown is not None]


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
    tokens = await reader.versions(wanted, freshness)
    # The points of the last answer to the same query are kept with the versions of the
    # buckets they summed: a Refresh recomputes only the steps whose buckets moved (live
    # traffic: the newest one or two), not a month of them.
    kept: SeriesPoints = request.app.state.series_points
    key = (query.range, query.resolution, query.filters, query.metrics)
    before = kept.get(key)
    if before is not None and before[0] == tokens:
        points = before[1]
    else:
        points = await _points(reader, cut, horizon, wanted, tokens, before, query.filters, query.metrics)
        kept.put(key, (tokens, points), len(points))
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
