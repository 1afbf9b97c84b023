"""The newest bucket's groups, kept up to date by the customers that moved.

Live traffic changes the newest bucket every flush, but only for the customers that
called since the last one: a few dozen of a thousand. Grouping the whole bucket again for
every Refresh costs its tens of thousands of rows (about a tenth of a second for a large
deployment); grouping each customer's rows apart and keeping their sum costs, per new
version, only the customers whose hash's ``@applied`` moved: their old part is taken out of
the sum, their new part added. Sums of integers do not depend on the order they are taken
in, so the result is exactly what grouping every row again would give.

Every ``BucketGroups`` is immutable once built: a Summary handed to a request (or cached for
the previous version) keeps seeing its own numbers while a newer one is built beside it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from operator import add, sub
from typing import TypeVar

from breakout.aggregate import Counters
from breakout.snapshot import Filters, SourceRow, currency_totals, group_rows

Key = tuple[str, ...]
H = TypeVar("H", bound=Hashable)
Part = tuple[bytes | None, dict[Key, Counters], dict[str, Counters]]  # @applied, groups, their totals


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
    grouping again only the customers whose ``@applied`` differs from ``previous``'s."""
    known = previous.parts if previous is not None else {}
    parts: dict[str, Part] = {}
    changed: list[tuple[Part | None, Part | None]] = []  # (old, new)
    for customer, (applied, rows) in customers.items():
        part = known.get(customer)
        if part is None or part[0] != applied or applied is None:
            groups = group_rows(rows, group_by, filters)
            fresh: Part = (applied, groups, currency_totals(groups.items()))
            changed.append((part, fresh))
            part = fresh
        parts[customer] = part
    changed += [(part, None) for customer, part in known.items() if customer not in customers]
    if previous is None:
        return _summed(parts)
    groups, counts = dict(previous.groups), dict(previous.counts)
    totals, currencies = dict(previous.totals), dict(previous.currencies)
    for old, new in changed:
        if old is not None:
            _take(groups, counts, old[1])
            _take(totals, currencies, old[2])
        if new is not None:
            _put(groups, counts, new[1])
            _put(totals, currencies, new[2])
    return BucketGroups(parts, groups, counts, dict(sorted(totals.items())), currencies)


def _summed(parts: dict[str, Part]) -> BucketGroups:
    groups: dict[Key, Counters] = {}
    counts: dict[Key, int] = {}
    totals: dict[str, Counters] = {}
    currencies: dict[str, int] = {}
    for _, part, part_totals in parts.values():
        _put(groups, counts, part)
        _put(totals, currencies, part_totals)
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
