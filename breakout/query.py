"""Read-API parameters → a query, with the caller's role applied, or a message a person can act on.

Kept apart from HTTP so every refusal (a bad date, a value given twice, a customer key
asking for another account) is a plain function call in a unit test; which names an
endpoint takes is declared once, in ``api.params``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from breakout.auth import Role
from breakout.errors import BreakoutError, QueryError
from breakout.series import parse_metrics, parse_resolution
from breakout.snapshot import COSTS, DIMENSIONS, Filters, sortable_columns
from breakout.timerange import TimeRange, parse_range, parse_tz

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
FORMATS = ("json", "csv")
# What a customer key never sees: what its calls cost us, and who carried them.
HIDDEN_FROM_CUSTOMERS = frozenset({"provider", *COSTS})


class AccessDenied(BreakoutError):
    """The key is valid but may not see what was asked (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """What every read shares: a time range and the rows admitted."""

    range: TimeRange
    filters: Filters


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """``GET /v1/series``: a range query plus the resolution and the metrics of each point."""

    range: TimeRange
    filters: Filters
    resolution: str
    metrics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SnapshotQuery:
    """``GET /v1/breakout``: a range query plus grouping, order, paging and format."""

    range: TimeRange
    filters: Filters
    group_by: tuple[str, ...]
    sort: str | None
    descending: bool
    limit: int
    offset: int
    format: str


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(f"{name}: give it once, not {len(values)} times")
    return values[0]


def _values(params: Mapping[str, Sequence[str]], name: str) -> frozenset[str] | None:
    values = [value for value in params.get(name, ()) if value != ""]
    return frozenset(values) if values else None


def _scoped_customers(asked: frozenset[str] | None, role: Role) -> frozenset[str] | None:
    """A customer key sees its own account only, whatever it asks; asking for another is 403."""
    if role.customer is None:
        return asked
    if asked is not None and asked != {role.customer}:
        others = sorted(asked - {role.customer})
        raise AccessDenied(
            f"this key reads customer {role.customer!r} only, not {', '.join(map(repr, others))}"
        )
    return frozenset({role.customer})


def _visible(parameter: str, column: str, role: Role) -> None:
    """A column hidden from a key is refused wherever the key names it, not only blanked:
    grouping or sorting by a hidden column would tell its values by the rows' order."""
    if role.customer is not None and column in HIDDEN_FROM_CUSTOMERS:
        raise AccessDenied(
            f"{parameter}: {column!r} is for admin keys; a customer key does not see what its calls "
            "cost us or which provider carried them, so it cannot group or sort by them either"
        )


def parse_range_query(params: Mapping[str, Sequence[str]], role: Role, today: date) -> RangeQuery:
    """The shared part of every read; ``today`` is the caller's date for a missing ``from``.

    ``params`` holds only names the endpoint declares (``api.params`` refuses the others).
    """
    tz = parse_tz(_single(params, "tz"))
    time_range = parse_range(_single(params, "from"), _single(params, "to"), tz, today)
    filters = Filters(
        customers=_scoped_customers(_values(params, "customer"), role),
        destinations=_values(params, "destination"),
        providers=_values(params, "provider"),
    )
    if filters.providers is not None and role.customer is not None:
        raise AccessDenied(
            "provider detail is for admin keys; a customer key reads its own traffic by destination"
        )
    return RangeQuery(time_range, filters)


def _int(params: Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int) -> int:
    text = _single(params, name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise QueryError(f"{name}: expected a whole number from {low} to {high}, got {text!r}")
    return int(text)


def parse_snapshot_query(params: Mapping[str, Sequence[str]], role: Role, today: date) -> SnapshotQuery:
    """``GET /v1/breakout``'s parameters, validated."""
    base = parse_range_query(params, role, today)
    group_text = _single(params, "group_by")
    group_by = tuple(name.strip() for name in (group_text or "customer,destination").split(","))
    unknown = [name for name in group_by if name not in DIMENSIONS]
    if unknown:
        raise QueryError(
            f"group_by: expected some of {', '.join(DIMENSIONS)} (comma-separated), got {group_text!r}"
        )
    for name in group_by:
        _visible("group_by", name, role)
    if len(set(group_by)) != len(group_by):
        raise QueryError(f"group_by: {group_text!r} names a column twice")
    sort_text = _single(params, "sort") or None
    sort, descending = None, False
    if sort_text is not None:
        descending = sort_text.startswith("-")
        sort = sort_text.removeprefix("-")
        if sort not in sortable_columns(group_by):
            raise QueryError(
                f"sort: {sort!r} is not a column of this report; use one of "
                f"{', '.join(sortable_columns(group_by))}, with - in front for descending"
            )
        _visible("sort", sort, role)
    output = _single(params, "format") or "json"
    if output not in FORMATS:
        raise QueryError(f"format: expected json or csv, got {output!r}")
    return SnapshotQuery(
        range=base.range,
        filters=base.filters,
        group_by=group_by,
        sort=sort,
        descending=descending,
        limit=_int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int(params, "offset", 0, 0, 10**9),
        format=output,
    )


def parse_series_query(params: Mapping[str, Sequence[str]], role: Role, today: date) -> SeriesQuery:
    """``GET /v1/series``'s parameters, validated."""
    base = parse_range_query(params, role, today)
    return SeriesQuery(
        range=base.range,
        filters=base.filters,
        resolution=parse_resolution(_single(params, "resolution"), base.range),
        metrics=parse_metrics(list(params.get("metric", ()))),
    )
