"""``/v1``: breakout snapshots and the value lists behind the page's selectors.

Parameters are declared once, as the models of ``api.params``; ``breakout.query`` owns
every rule and message about their values. Every read sums mirror rows, so
every one is refused with a 503 while the mirror is incomplete (``api.reader``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response

from api.errors import error_responses
from api.params import RangeParams, SnapshotParams, refuse_repeats
from api.presented import PresentedPages
from api.reader import Freshness, MirrorReader
from api.responses import OrjsonResponse
from api.schemas import Me, Snapshot, ValueList
from api.security import Caller
from breakout.buckets import Retention
from breakout.query import AccessDenied, RangeQuery, SnapshotQuery, parse_range_query, parse_snapshot_query
from breakout.snapshot import Summary, to_csv, totals_row
from breakout.timerange import TimeRange, readable_cover

router = APIRouter(prefix="/v1", tags=["reports"])


def today_of(params: RangeParams) -> date:
    try:
        return datetime.now(ZoneInfo(params.tz or "UTC")).date()
    except Exception:  # an invalid tz is reported by the parser, with its message
        return datetime.now(UTC).date()


async def _range_params(request: Request, params: Annotated[RangeParams, Query()]) -> RangeParams:
    refuse_repeats(request, RangeParams)
    return params


async def _snapshot_params(request: Request, params: Annotated[SnapshotParams, Query()]) -> SnapshotParams:
    refuse_repeats(request, SnapshotParams)
    return params


RangeParameters = Annotated[RangeParams, Depends(_range_params)]
SnapshotParameters = Annotated[SnapshotParams, Depends(_snapshot_params)]


def iso_ms(ms: int | None, time_range: TimeRange) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, time_range.tz).isoformat(timespec="milliseconds")


async def _summary(
    request: Request, query: RangeQuery | SnapshotQuery, group_by: tuple[str, ...]
) -> tuple[Summary, Freshness]:
    reader: MirrorReader = request.app.state.reader
    retention: Retention = request.app.state.retention
    freshness = await reader.freshness()
    now = int(datetime.now(UTC).timestamp())
    stream_time = freshness.stream_ms // 1000 if freshness.stream_ms is not None else now
    buckets = readable_cover(query.range, retention, stream_time, now)
    tokens = await reader.versions(buckets, freshness)
    return await reader.summary(buckets, tokens, query.filters, group_by), freshness


@router.get(
    "/me", response_model=Me, summary="The role of the caller's key", responses=error_responses(401, 503)
)
async def me(role: Caller) -> dict[str, Any]:
    if role.customer is None:
        return {"role": "admin", "customer": None}
    return {"role": "customer", "customer": role.customer}


@router.get(
    "/breakout",
    response_model=Snapshot,
    summary="A breakout snapshot",
    description="Rows grouped by `group_by` and currency over a date range, with totals. "
    "Ratios are rebuilt from summed counts; money never sums across currencies. "
    "`format=csv` returns the same rows (same order and page) as CSV.",
    responses={200: {"content": {"text/csv": {}}}, **error_responses(401, 403, 422, 503, refilling=True)},
)
async def breakout(
    request: Request,
    role: Caller,
    params: SnapshotParameters,
) -> Response:
    query = parse_snapshot_query(params.values(), role, today_of(params))
    summary, freshness = await _summary(request, query, query.group_by)
    costs = role.is_admin
    pages: PresentedPages = request.app.state.pages
    page = pages.page(summary, query.sort, query.descending, query.offset, query.limit, with_costs=costs)
    if query.format == "csv":
        first, last = query.range.iso(query.range.start)[:10], query.range.iso(query.range.end - 1)[:10]
        name = f"breakout-{first}-{last}.csv"
        return Response(
            to_csv(query.group_by, page),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "X-Breakout-As-Of": iso_ms(freshness.as_of_ms, query.range) or "",
                "X-Breakout-Behind-Ms": "" if freshness.behind_ms is None else str(freshness.behind_ms),
                "X-Breakout-Total-Rows": str(summary.total_rows),
            },
        )
    per_currency = summary.currency_totals()
    return OrjsonResponse(
        {
            "from": query.range.iso(query.range.start),
            "to": query.range.iso(query.range.end),
            "tz": query.range.tz.key,
            "group_by": list(query.group_by),
            "as_of": iso_ms(freshness.as_of_ms, query.range),
            "as_of_ms": freshness.as_of_ms,
            "behind_ms": freshness.behind_ms,
            "total_rows": summary.total_rows,
            "offset": query.offset,
            "limit": query.limit,
            "rows": page,
            "totals": totals_row(per_currency, with_costs=costs),
            "currency_totals": [
                totals_row({currency: counters}, with_costs=costs)
                for currency, counters in per_currency.items()
            ],
        }
    )


async def _values(request: Request, role: Caller, params: RangeParams, dimension: str) -> dict[str, Any]:
    if dimension == "provider" and not role.is_admin:
        raise AccessDenied("the provider list is for admin keys")
    query = parse_range_query(params.values(), role, today_of(params))
    summary, freshness = await _summary(request, query, (dimension,))
    attempts: dict[str, int] = {}
    for (name, _currency), counters in summary.groups.items():
        attempts[name] = attempts.get(name, 0) + counters[0]
    return {
        "from": query.range.iso(query.range.start),
        "to": query.range.iso(query.range.end),
        "tz": query.range.tz.key,
        "as_of": iso_ms(freshness.as_of_ms, query.range),
        "values": [
            {"name": name, "attempts": count}
            for name, count in sorted(attempts.items(), key=lambda item: (-item[1], item[0]))
        ],
    }


_LIST = {"response_model": ValueList, "responses": error_responses(401, 403, 422, 503, refilling=True)}


@router.get("/destinations", summary="Destinations with traffic in a range", **_LIST)  # type: ignore[arg-type]
async def destinations(request: Request, role: Caller, params: RangeParameters) -> dict[str, Any]:
    return await _values(request, role, params, "destination")


@router.get("/customers", summary="Customers with traffic in a range", **_LIST)  # type: ignore[arg-type]
async def customers(request: Request, role: Caller, params: RangeParameters) -> dict[str, Any]:
    return await _values(request, role, params, "customer")


@router.get("/providers", summary="Providers with traffic in a range", **_LIST)  # type: ignore[arg-type]
async def providers(request: Request, role: Caller, params: RangeParameters) -> dict[str, Any]:
    return await _values(request, role, params, "provider")
