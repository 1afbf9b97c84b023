"""The newest bucket's groups, kept up to date by the rows that moved.

Live traffic changes the newest bucket every flush, but only for the customers that
called since the last one, and of their rows only the few their calls touched. Grouping
the whole bucket again for every Refresh costs its tens of thousands of rows (about a
tenth of a second for a large deployment); so each customer's rows are grouped apart,
and a new version costs, per customer whose hash's ``@applied`` moved, the rows that
changed: the reader hands over a moved customer's unchanged rows as the very objects it
read before (``api.reader.MirrorReader._reparse``), so the rows that are new objects, and
the old ones no longer there, are what changed. Their old values are taken out of the
customer's groups and of the bucket's sums, their new ones added. Sums of integers do not
depend on the order they are taken in, so the result is exactly what grouping every row
again would give.

Every ``BucketGroups`` is immutable once built: a Summary handed to a request (or cached for
the previous version) keeps seeing its own numbers while a newer one is built beside it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from operator import add, itemgetter, sub
from typing import TypeVar

from breakout.aggregate import Counters
from breakout.aggregate import add as add_counters
from breakout.snapshot import DIMENSIONS, Filters, ReadCounters, SourceRow

Key = tuple[str, ...]
H = TypeVar("H", bound=Hashable)
Sums = tuple[dict[Key, Counters], dict[str, Counters]]  # groups, and their totals per currency


@dataclass(frozen=True, slots=True)
class Part:
    """One customer's share of a bucket: its admitted rows grouped, and the rows as read.

    The admitted rows behind each group and each currency are counted, so a group (or a
    currency) goes exactly when its last row does.
    """

    applied: bytes | None
    rows: list[SourceRow]
    groups: dict[Key, Counters]
    totals: dict[str, Counters]
    rows_in_group: dict[Key, int]
    rows_in_currency: dict[str, int]


@dataclass(frozen=True, slots=True)
class BucketGroups:
    """One bucket's admitted rows grouped, summed over its customers, with each one's part.

    ``counts`` says how many customers' parts hold a group (or a currency, in
    ``currencies``): a group exists while one does, exactly as when every row is grouped.
    """

    parts: dict[str, Part]
    groups: dict[Key, Counters]
    counts: dict[Key, int]
    totals: dict[str, Counters]
    currencies: dict[str, int]

    @property
    def weight(self) -> int:
        """Roughly the rows held, for the reader's cache budget."""
        return 2 * len(self.groups) + len(self.parts) + 1


def regroup(
    previous: BucketGroups | None,
    customers: dict[str, tuple[bytes | None, list[SourceRow]]],
    group_by: tuple[str, ...],
    filters: Filters,
) -> BucketGroups:
    """The groups of a bucket whose customers are ``customers`` (customer → (@applied, rows)),
    grouping again only the rows of customers whose ``@applied`` differs from ``previous``'s."""
    known = previous.parts if previous is not None else {}
    grouping = _Grouping(group_by, filters)
    parts: dict[str, Part] = {}
    changed: list[tuple[Sums | None, Sums | None]] = []  # (old, new) of what moved
    for customer, (applied, rows) in customers.items():
        part = known.get(customer)
        if part is None or part.applied != applied or applied is None:
            fresh, moved = grouping.moved(part, applied, rows)
            changed.append(moved)
            part = fresh
        parts[customer] = part
    changed += [((part.groups, part.totals), None) for name, part in known.items() if name not in customers]
    if previous is None:
        return _summed(parts)
    groups, counts = dict(previous.groups), dict(previous.counts)
    totals, currencies = dict(previous.totals), dict(previous.currencies)
    for old, new in changed:
        if old is not None:
            _take(groups, counts, old[0])
            _take(totals, currencies, old[1])
        if new is not None:
            _put(groups, counts, new[0])
            _put(totals, currencies, new[1])
    return BucketGroups(parts, groups, counts, dict(sorted(totals.items())), currencies)


class _Grouping:
    """How rows become a part's groups: ``breakout.snapshot.group_rows``'s rule (admitted
    rows with attempts, keyed by the group_by values and the currency), row by row."""

    def __init__(self, group_by: tuple[str, ...], filters: Filters) -> None:
        self.key_of = itemgetter(*[DIMENSIONS.index(name) for name in group_by], 3)
        self.unfiltered = filters == Filters()
        self.filters = filters

    def admitted(self, row: SourceRow) -> bool:
        return bool(row[4][0]) and (self.unfiltered or self.filters.admits(row))

    def moved(
        self, old: Part | None, applied: bytes | None, rows: list[SourceRow]
    ) -> tuple[Part, tuple[Sums | None, Sums | None]]:
        """The customer's new part, and the old and new sums of the groups and currencies
        that moved (every one, when grouped whole)."""
        if old is not None:
            before = {id(row): row for row in old.rows}  # both lists alive: no id is reused
            came = [row for row in rows if before.pop(id(row), None) is None]
            gone = list(before.values())
            if 2 * (len(came) + len(gone)) <= len(rows):
                return self._updated(old, applied, rows, came, gone)
        part = self._whole(applied, rows)
        return part, (None if old is None else (old.groups, old.totals), (part.groups, part.totals))

    def _whole(self, applied: bytes | None, rows: list[SourceRow]) -> Part:
        groups: dict[Key, Counters] = {}
        totals: dict[str, Counters] = {}
        in_group: dict[Key, int] = {}
        in_currency: dict[str, int] = {}
        for row in rows:
            if self.admitted(row):
                _row_into_new(groups, in_group, self.key_of(row), row[4])
                _row_into_new(totals, in_currency, row[3], row[4])
        return Part(applied, rows, groups, totals, in_group, in_currency)

    def _updated(
        self,
        old: Part,
        applied: bytes | None,
        rows: list[SourceRow],
        came: list[SourceRow],
        gone: list[SourceRow],
    ) -> tuple[Part, tuple[Sums | None, Sums | None]]:
        # What moved, per group: the rows that came less the rows that went, summed first
        # (in lists made here), so each group and currency is then changed once.
        delta: dict[Key, Counters] = {}
        rows_moved: dict[Key, int] = {}
        for row in came:
            if self.admitted(row):
                _row_into_new(delta, rows_moved, self.key_of(row), row[4])
        for row in gone:
            if self.admitted(row):
                key = self.key_of(row)
                moved = delta.get(key)
                if moved is None:
                    delta[key], rows_moved[key] = [-value for value in row[4]], -1
                else:
                    moved[:] = map(sub, moved, row[4])
                    rows_moved[key] -= 1
        currency_delta: dict[str, Counters] = {}
        currency_rows_moved: dict[str, int] = {}
        for key, moved in delta.items():
            total = currency_delta.get(key[-1])
            if total is None:
                currency_delta[key[-1]] = list(moved)
            else:
                add_counters(total, moved)
            currency_rows_moved[key[-1]] = currency_rows_moved.get(key[-1], 0) + rows_moved[key]
        # The old part's dicts copied; their lists are the old part's, so changed ones are new.
        groups, in_group = _moved_by(old.groups, old.rows_in_group, delta, rows_moved)
        totals, in_currency = _moved_by(old.totals, old.rows_in_currency, currency_delta, currency_rows_moved)
        part = Part(applied, rows, groups, totals, in_group, in_currency)
        return part, (_only(old, delta, currency_delta), _only(part, delta, currency_delta))


def _moved_by(
    sums: dict[H, Counters], rows_in: dict[H, int], delta: dict[H, Counters], rows_moved: dict[H, int]
) -> tuple[dict[H, Counters], dict[H, int]]:
    """New ``sums`` and ``rows_in`` with ``delta`` added: a key goes when no row is left in it."""
    sums, rows_in = dict(sums), dict(rows_in)
    for key, moved in delta.items():
        left = rows_in.get(key, 0) + rows_moved[key]
        if left:
            total = sums.get(key)
            sums[key] = list(moved) if total is None else list(map(add, total, moved))
            rows_in[key] = left
        elif key in rows_in:
            del sums[key], rows_in[key]
    return sums, rows_in


def _only(part: Part, keys: Iterable[Key], currencies: Iterable[str]) -> Sums:
    """The part's sums of ``keys`` and ``currencies`` (those it holds)."""
    groups, totals = part.groups, part.totals
    return (
        {key: groups[key] for key in keys if key in groups},
        {currency: totals[currency] for currency in currencies if currency in totals},
    )


def _row_into_new(sums: dict[H, Counters], rows_in: dict[H, int], key: H, counters: ReadCounters) -> None:
    """Add one row's counters under ``key``, in place: only for sums this part made."""
    total = sums.get(key)
    if total is None:
        sums[key], rows_in[key] = list(counters), 1
    else:
        add_counters(total, counters)
        rows_in[key] += 1


def _summed(parts: dict[str, Part]) -> BucketGroups:
    groups: dict[Key, Counters] = {}
    counts: dict[Key, int] = {}
    totals: dict[str, Counters] = {}
    currencies: dict[str, int] = {}
    for part in parts.values():
        _put(groups, counts, part.groups)
        _put(totals, currencies, part.totals)
    return BucketGroups(parts, groups, counts, dict(sorted(totals.items())), currencies)


def _put(sums: dict[H, Counters], counts: dict[H, int], part: dict[H, Counters]) -> None:
    """Add ``part`` into ``sums``; a sum is always a new list, never one a part or an older
    BucketGroups holds."""
    for key, counters in part.items():
        total = sums.get(key)
        sums[key] = list(counters) if total is None else list(map(add, total, counters))
        counts[key] = counts.get(key, 0) + 1


def _take(sums: dict[H, Counters], counts: dict[H, int], part: dict[H, Counters]) -> None:
    """Take ``part`` (added before) out of ``sums``; a key no part holds any more goes."""
    for key, counters in part.items():
        left = counts[key] - 1
        if left:
            counts[key] = left
            sums[key] = list(map(sub, sums[key], counters))
        else:
            del counts[key], sums[key]
