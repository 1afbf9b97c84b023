"""Report rows as shown, remembered by what they show.

Formatting a row (every ratio rounded, money as decimals, the SIP code mix sorted) costs
more than reading and summing it once the sums are cached: a page of 1,000 rows is tens of
milliseconds. Between two Refreshes most rows of a page have the same sums (only the
customers that called since moved), so a row is formatted once per distinct content and
then reused. Keyed by everything the row shows (grouping, group values, every counter and
whether costs are shown), a remembered row is the row ``present`` would build now.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from api.reader import LRU
from breakout.snapshot import Group, Summary, present


class PresentedRows:
    """``breakout.snapshot.present`` with the last ``capacity`` distinct rows remembered.

    The rows handed out are shared between responses: callers only serialize them.
    """

    def __init__(self, capacity: int) -> None:
        self._rows: LRU[tuple[Any, ...], dict[str, Any]] = LRU(capacity)

    def page(
        self, group_by: tuple[str, ...], groups: list[Group], *, with_costs: bool
    ) -> list[dict[str, Any]]:
        shown = []
        for group in groups:
            key = (group_by, group[0], with_costs, *group[1])
            row = self._rows.get(key)
            if row is None:
                row = present(group_by, group, with_costs=with_costs)
                self._rows.put(key, row)
            shown.append(row)
        return shown


class PresentedPages:
    """A summary's pages as shown, kept as long as the summary itself.

    The reader hands the same Summary to every request that read the same bucket versions,
    so the many users who Refresh one report within a flush share its page: merged,
    ordered and formatted once.
    """

    def __init__(self, rows: PresentedRows) -> None:
        self.rows = rows
        self._pages: WeakKeyDictionary[Summary, dict[tuple[Any, ...], list[dict[str, Any]]]] = (
            WeakKeyDictionary()
        )

    def page(
        self,
        summary: Summary,
        sort: str | None,
        descending: bool,
        offset: int,
        limit: int,
        *,
        with_costs: bool,
    ) -> list[dict[str, Any]]:
        pages = self._pages.get(summary)
        if pages is None:
            pages = self._pages[summary] = {}
        key = (sort, descending, offset, limit, with_costs)
        shown = pages.get(key)
        if shown is None:
            groups = summary.page(sort, descending, offset, limit)
            shown = pages[key] = self.rows.page(summary.group_by, groups, with_costs=with_costs)
        return shown
