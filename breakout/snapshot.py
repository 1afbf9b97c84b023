"""A breakout snapshot: stored rows grouped, summed, ordered and shown as people read them.

Rows come from several buckets and keys; a group's counters are their element-wise sum
and every ratio is rebuilt from that sum (a total is never an average of rows). Money is
summed per currency only. Ratios are rounded half-even to two places in integer
arithmetic, so the API, the CSV and the tests agree to the digit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from operator import add, itemgetter
from typing import Any

from breakout.aggregate import (
    ATTEMPTS,
    CONNECTED,
    CUSTOMER_CHARGE,
    DTMF,
    DURATION_MS,
    EFFECTIVE,
    FIRST_SIP,
    PDD_CALLS,
    PDD_MS,
    PENDING,
    PROVIDER_CHARGE,
    SHORT_CALLS,
    SIP_LABELS,
    WIDTH,
    Counters,
)
from breakout.aggregate import add as add_counters
from breakout.csv_cells import csv_line
from breakout.money import format_micros

# A stored row as read: customer, destination, provider, currency, counters. The counters
# are a tuple: a row is never changed once read, and a tuple of integers (and then the row
# around it) drops out of the cyclic garbage collector's sight, which a list never does.
# The read API holds hundreds of thousands of rows, and live traffic replaces some every
# second: as lists, each young collection scanned them (pauses of 0.1-0.2 s).
ReadCounters = tuple[int, ...]
SourceRow = tuple[str, str, str, str, ReadCounters]
DIMENSIONS = ("customer", "destination", "provider")
METRICS = (
    "attempts",
    "connected",
    "asr",
    "acd",
    "duration",
    "duration_hms",
    "provider_charge",
    "customer_charge",
    "profit",
    "profit_pct",
    "pending",
    "dtmf",
    "dtmf_pct",
    "ner",
    "pdd",
    "short_calls",
    "short_pct",
)
# Not a sortable metric: an object of counts per SIP code (a CSV cell ``486:3 503:12``).
SIP_CODES_COLUMN = "sip_codes"
NO_SIP_CODE = "none"
MONEY = ("provider_charge", "customer_charge", "profit", "profit_pct")
COSTS = ("provider_charge", "profit", "profit_pct")
Group = tuple[tuple[str, ...], Counters]  # (dimension values…, currency), summed counters


@dataclass(frozen=True, slots=True)
class Filters:
    """Which stored rows a snapshot keeps; None means no restriction on that dimension."""

    customers: frozenset[str] | None = None
    destinations: frozenset[str] | None = None
    providers: frozenset[str] | None = None

    def admits(self, row: SourceRow) -> bool:
        return (
            (self.customers is None or row[0] in self.customers)
            and (self.destinations is None or row[1] in self.destinations)
            and (self.providers is None or row[2] in self.providers)
        )


def group_rows(
    rows: Iterable[SourceRow], group_by: tuple[str, ...], filters: Filters
) -> dict[tuple[str, ...], Counters]:
    """Sum the admitted rows per (group_by values…, currency). Counters are copied, never shared.

    A row of no attempts is left out: revisions moved every CDR it had elsewhere, and
    counters never go negative, so it adds nothing and no group is made of such rows only.
    """
    indexes = [DIMENSIONS.index(name) for name in group_by] + [3]
    key_of = itemgetter(*indexes)
    unfiltered = filters == Filters()
    groups: dict[tuple[str, ...], Counters] = {}
    for row in rows:
        counters = row[4]
        if not counters[0] or (not unfiltered and not filters.admits(row)):
            continue
        key = key_of(row)
        total = groups.get(key)
        if total is None:
            groups[key] = list(counters)
        else:
            add_counters(total, counters)
    return groups


def merge_groups(parts: list[dict[tuple[str, ...], Counters]]) -> dict[tuple[str, ...], Counters]:
    """Sum group dicts of several buckets into a new dict; the parts are never modified.

    The first part is copied shallowly and its counter lists are shared, never added to:
    a sum is always a new list. Keys keep the first part's order, then new keys follow,
    so a first part built in key order stays nearly sorted (cheap to sort again).
    """
    if not parts:
        return {}
    merged = dict(parts[0])
    for part in parts[1:]:
        for key, counters in part.items():
            total = merged.get(key)
            merged[key] = list(counters) if total is None else list(map(add, total, counters))
    return merged


def rounded(numerator: int, denominator: int, places: int = 2) -> str | None:
    """``numerator / denominator`` rounded half-even to ``places`` decimals, as text."""
    if denominator == 0:
        return None
    sign = "-" if (numerator < 0) != (denominator < 0) and numerator != 0 else ""
    quotient, remainder = divmod(abs(numerator) * 10**places, abs(denominator))
    if 2 * remainder > abs(denominator) or (2 * remainder == abs(denominator) and quotient % 2):
        quotient += 1
    whole, fraction = divmod(quotient, 10**places)
    if quotient == 0:
        sign = ""
    return f"{sign}{whole}.{fraction:0{places}d}"


def hms(duration_ms: int) -> str:
    """Whole seconds (half-even) as ``H:MM:SS``; hours are not wrapped into days."""
    seconds, remainder = divmod(duration_ms, 1000)
    if remainder > 500 or (remainder == 500 and seconds % 2):
        seconds += 1
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


# Every column that is a count or a ratio of counts (not money), by name: ``figures`` shows
# them all, a series point only those asked for.
TRAFFIC: dict[str, Callable[[Counters], Any]] = {
    "attempts": itemgetter(ATTEMPTS),
    "connected": itemgetter(CONNECTED),
    "asr": lambda c: rounded(100 * c[CONNECTED], c[ATTEMPTS]),
    "acd": lambda c: rounded(c[DURATION_MS], 1000 * c[CONNECTED]),
    "duration": lambda c: rounded(c[DURATION_MS], 1000, 3),
    "duration_hms": lambda c: hms(c[DURATION_MS]),
    "pending": itemgetter(PENDING),
    "dtmf": itemgetter(DTMF),
    "dtmf_pct": lambda c: rounded(100 * c[DTMF], c[ATTEMPTS]),
    "ner": lambda c: rounded(100 * c[EFFECTIVE], c[ATTEMPTS]),
    "pdd": lambda c: rounded(c[PDD_MS], 1000 * c[PDD_CALLS]),
    "short_calls": itemgetter(SHORT_CALLS),
    "short_pct": lambda c: rounded(100 * c[SHORT_CALLS], c[CONNECTED]),
}


def figures(counters: Counters, with_money: bool = True, with_costs: bool = True) -> dict[str, Any]:
    """The columns of one row: counts as integers, money and ratios as decimal strings.

    ``with_costs=False`` blanks what the provider charges and the margin: a customer
    sees what it is charged, not what its calls cost us.
    """
    money: dict[str, str | None] = dict.fromkeys(MONEY)
    if with_money:
        provider, customer = counters[PROVIDER_CHARGE], counters[CUSTOMER_CHARGE]
        money["provider_charge"] = format_micros(provider)
        money["customer_charge"] = format_micros(customer)
        money["profit"] = format_micros(customer - provider)
        money["profit_pct"] = rounded(100 * (customer - provider), customer)
        if not with_costs:
            money.update(dict.fromkeys(COSTS))
    out = {name: money[name] if name in money else TRAFFIC[name](counters) for name in METRICS}
    out[SIP_CODES_COLUMN] = sip_codes(counters)
    return out


def sip_codes(counters: Counters) -> dict[str, int]:
    """The final SIP codes of a row's attempts, most first (``none``: attempts without one).

    Only codes that occurred: a row has a handful, the catalogue twenty.
    """
    counts = {label: count for label, count in zip(SIP_LABELS, counters[FIRST_SIP:], strict=True) if count}
    unknown = counters[ATTEMPTS] - sum(counts.values())
    if unknown:
        counts[NO_SIP_CODE] = unknown
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def present(group_by: tuple[str, ...], group: Group, *, with_costs: bool) -> dict[str, Any]:
    """One group as an API row: its dimension values, its currency, its figures."""
    key, counters = group
    row: dict[str, Any] = dict(zip(group_by, key, strict=False))
    row["currency"] = key[-1]
    row.update(figures(counters, with_costs=with_costs))
    return row


def _sort_value(column: str, counters: Counters) -> float | int | None:
    """A number ordering rows by ``column`` exactly as its shown value would (None: undefined)."""
    attempts, connected = counters[ATTEMPTS], counters[CONNECTED]
    profit = counters[CUSTOMER_CHARGE] - counters[PROVIDER_CHARGE]
    match column:
        case "attempts":
            return attempts
        case "connected":
            return connected
        case "duration" | "duration_hms":
            return counters[DURATION_MS]
        case "provider_charge":
            return counters[PROVIDER_CHARGE]
        case "customer_charge":
            return counters[CUSTOMER_CHARGE]
        case "profit":
            return profit
        case "pending":
            return counters[PENDING]
        case "dtmf":
            return counters[DTMF]
        case "asr":
            return connected / attempts if attempts else None
        case "acd":
            return counters[DURATION_MS] / connected if connected else None
        case "profit_pct":
            return profit / counters[CUSTOMER_CHARGE] if counters[CUSTOMER_CHARGE] else None
        case "dtmf_pct":
            return counters[DTMF] / attempts if attempts else None
        case "ner":
            return counters[EFFECTIVE] / attempts if attempts else None
        case "pdd":
            return counters[PDD_MS] / counters[PDD_CALLS] if counters[PDD_CALLS] else None
        case "short_calls":
            return counters[SHORT_CALLS]
        case "short_pct":
            return counters[SHORT_CALLS] / connected if connected else None
    raise ValueError(f"not a sortable column: {column}")


def sortable_columns(group_by: tuple[str, ...]) -> tuple[str, ...]:
    return (*group_by, "currency", *METRICS)


def order(
    groups: dict[tuple[str, ...], Counters], group_by: tuple[str, ...], sort: str | None, descending: bool
) -> list[Group]:
    """Groups in report order: by ``sort`` (undefined ratios last), ties by the group keys."""
    ordered = sorted(groups.items())
    if sort is None:
        if descending:
            ordered.reverse()
        return ordered
    if sort in group_by or sort == "currency":
        position = -1 if sort == "currency" else group_by.index(sort)
        ordered.sort(key=lambda group: group[0][position], reverse=descending)
        return ordered
    keyed = [(_sort_value(sort, group[1]), group) for group in ordered]
    defined = [item for item in keyed if item[0] is not None]
    defined.sort(key=itemgetter(0), reverse=descending)
    return [group for _, group in defined] + [group for value, group in keyed if value is None]


def currency_totals(groups: Iterable[Group]) -> dict[str, Counters]:
    """Summed counters per currency: money is never added across currencies."""
    by_currency: dict[str, list[Counters]] = {}
    for key, counters in groups:
        by_currency.setdefault(key[-1], []).append(counters)
    return {
        currency: [sum(column) for column in zip(*rows, strict=True)]
        for currency, rows in sorted(by_currency.items())
    }


def totals_row(per_currency: dict[str, Counters], *, with_costs: bool) -> dict[str, Any]:
    """The report's totals: counts over everything; money only when there is one currency."""
    all_counts = [sum(values) for values in zip(*per_currency.values(), strict=True)] or [0] * WIDTH
    single = len(per_currency) == 1
    row: dict[str, Any] = {"currency": next(iter(per_currency)) if single else None}
    row.update(figures(all_counts, with_money=single, with_costs=with_costs))
    return row


def to_csv(group_by: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with a header; an undefined ratio is an empty cell.

    Cells are written by ``csv_cell``, the rule the portal's Download CSV follows too, so a
    name from a CDR never reaches a spreadsheet as a formula.
    """
    columns = [*group_by, "currency", *METRICS]
    return csv_line([*columns, SIP_CODES_COLUMN]) + "".join(
        [csv_line([*[row[column] for column in columns], _codes_cell(row[SIP_CODES_COLUMN])]) for row in rows]
    )


def _codes_cell(codes: dict[str, int]) -> str:
    return " ".join(f"{code}:{count}" for code, count in codes.items())


class Settled:
    """The summed groups of every bucket but the newest, in key order, with their totals.

    These buckets rarely change (only a late CDR moves them), so the read API keeps them
    summed once and adds the newest bucket, the one live traffic keeps changing, on top.
    """

    def __init__(self, groups: dict[tuple[str, ...], Counters]) -> None:
        self.groups = dict(sorted(groups.items()))
        self.keys = list(self.groups)
        self._totals: dict[str, Counters] | None = None

    def currency_totals(self) -> dict[str, Counters]:
        if self._totals is None:
            self._totals = currency_totals(self.groups.items())
        return self._totals


class Summary:
    """A snapshot: the settled groups plus the newest bucket's, summed only as far as needed.

    A page in the default order (by the group columns) merges the two key orders lazily,
    so it costs the rows shown; totals add the two parts' totals. Other orders sum every
    group once and keep the result. The read API caches a Summary while none of its
    buckets changes, so repeated Refreshes and further pages cost only the rows shown.
    """

    def __init__(
        self,
        group_by: tuple[str, ...],
        settled: Settled,
        newest: dict[tuple[str, ...], Counters],
        newest_totals: dict[str, Counters] | None = None,
    ) -> None:
        """``newest_totals``: ``currency_totals`` of ``newest``, when the caller has them already."""
        self.group_by = group_by
        self.settled = settled
        self.newest = newest
        self._newest_totals = newest_totals
        self._groups: dict[tuple[str, ...], Counters] | None = None
        self._orders: dict[tuple[str, bool], list[Group]] = {}
        self._new_keys: list[tuple[str, ...]] | None = None
        self._totals: dict[str, Counters] | None = None

    @property
    def groups(self) -> dict[tuple[str, ...], Counters]:
        """Every group, summed."""
        if self._groups is None:
            self._groups = merge_groups([self.settled.groups, self.newest])
        return self._groups

    def _keys_only_newest(self) -> list[tuple[str, ...]]:
        if self._new_keys is None:
            settled = self.settled.groups
            self._new_keys = sorted(key for key in self.newest if key not in settled)
        return self._new_keys

    @property
    def total_rows(self) -> int:
        return len(self.settled.groups) + len(self._keys_only_newest())

    def page(self, sort: str | None, descending: bool, offset: int, limit: int) -> list[Group]:
        """Rows ``offset`` to ``offset + limit`` in report order (see ``order``)."""
        if sort is not None:
            ordered = self._orders.get((sort, descending))
            if ordered is None:
                ordered = self._orders[(sort, descending)] = order(
                    self.groups, self.group_by, sort, descending
                )
            return ordered[offset : offset + limit]
        settled, newest = self.settled.groups, self.newest
        old_keys, new_keys = self.settled.keys, self._keys_only_newest()
        if descending:
            old_keys, new_keys = old_keys[::-1], new_keys[::-1]
        rows: list[Group] = []
        for key in islice(heapq.merge(old_keys, new_keys, reverse=descending), offset, offset + limit):
            total, fresh = settled.get(key), newest.get(key)
            if total is None:
                rows.append((key, list(fresh or ())))
            else:
                rows.append((key, total if fresh is None else list(map(add, total, fresh))))
        return rows

    def currency_totals(self) -> dict[str, Counters]:
        if self._totals is None:
            totals = {
                currency: list(counters) for currency, counters in self.settled.currency_totals().items()
            }
            newest = self._newest_totals
            if newest is None:
                newest = currency_totals(self.newest.items())
            for currency, counters in newest.items():
                totals[currency] = list(map(add, totals.get(currency, [0] * len(counters)), counters))
            self._totals = dict(sorted(totals.items()))
        return self._totals
