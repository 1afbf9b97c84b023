"""Rolling per-minute attempts and connected counts per key, with running baseline sums.

One evaluation needs, per key, each minute of the recent window (to test every suffix)
and the baseline's total. The window is kept minute by minute; the baseline is a running
sum that adds the minute leaving the window and subtracts the minute leaving the
baseline, exactly what was added (never re-read), so it cannot drift. Minutes are stored
sparsely as three flat arrays (key id, attempts, connected): about 12 bytes per key with
traffic per minute, so a day of history for thousands of keys stays in tens of megabytes.
"""

from __future__ import annotations

from array import array
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping

from breakout.noc.rules import AlertKey

# (attempts, connected)
Counts = tuple[int, int]
# Per (destination, provider): attempts and connected in one minute, as the mirror holds them.
PairCounts = Mapping[tuple[str, str], Counts]


def with_destination_totals(pairs: PairCounts) -> dict[AlertKey, Counts]:
    """The pairs' counts plus, per destination, all providers together (key ``(destination, None)``)."""
    keyed: dict[AlertKey, Counts] = {}
    totals: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (destination, provider), (attempts, connected) in pairs.items():
        if attempts:
            keyed[(destination, provider)] = (attempts, connected)
            total = totals[destination]
            total[0] += attempts
            total[1] += connected
    keyed.update(((destination, None), (a, c)) for destination, (a, c) in totals.items())
    return keyed


class _Minute:
    """One minute's counts of the keys that had attempts, as parallel arrays."""

    __slots__ = ("attempts", "connected", "ids")

    def __init__(self, ids: Iterable[int], attempts: Iterable[int], connected: Iterable[int]) -> None:
        self.ids = array("I", ids)
        self.attempts = array("I", attempts)
        self.connected = array("I", connected)


class RollingSeries:
    """The last ``window + baseline`` minutes, pushed one consecutive minute at a time."""

    def __init__(self, window_minutes: int, baseline_minutes: int) -> None:
        self.window_minutes = window_minutes
        self.baseline_minutes = baseline_minutes
        self._ids: dict[AlertKey, int] = {}
        self._keys: list[AlertKey] = []
        self._minutes: deque[_Minute] = deque()
        self._base_attempts = array("q")
        self._base_connected = array("q")

    def push(self, pairs: PairCounts) -> None:
        """Append the next minute (per pair counts); the oldest minute leaves the baseline."""
        keyed = with_destination_totals(pairs)
        ids = [self._id(key) for key in keyed]
        self._minutes.append(_Minute(ids, (a for a, _ in keyed.values()), (c for _, c in keyed.values())))
        if len(self._minutes) > self.window_minutes:
            self._add(self._minutes[-self.window_minutes - 1], 1)
        if len(self._minutes) > self.window_minutes + self.baseline_minutes:
            self._add(self._minutes.popleft(), -1)

    def window(self) -> dict[AlertKey, tuple[list[int], list[int]]]:
        """Per key with attempts in the window: attempts and connected per minute, oldest first.

        Lists always have ``window_minutes`` entries; minutes before the first push count 0.
        """
        size = self.window_minutes
        count = len(self._minutes)
        recent = [self._minutes[i] for i in range(max(0, count - size), count)]  # from the right end
        offset = size - len(recent)
        by_id: dict[int, tuple[list[int], list[int]]] = {}
        for position, minute in enumerate(recent, start=offset):
            for key_id, attempts, connected in zip(
                minute.ids, minute.attempts, minute.connected, strict=True
            ):
                series = by_id.get(key_id)
                if series is None:
                    series = by_id[key_id] = ([0] * size, [0] * size)
                series[0][position] = attempts
                series[1][position] = connected
        return {self._keys[key_id]: series for key_id, series in by_id.items()}

    def baseline(self, key: AlertKey) -> Counts:
        """Attempts and connected of ``key`` over the baseline minutes (before the window)."""
        key_id = self._ids.get(key)
        if key_id is None:
            return (0, 0)
        return (self._base_attempts[key_id], self._base_connected[key_id])

    def _id(self, key: AlertKey) -> int:
        key_id = self._ids.get(key)
        if key_id is None:
            key_id = self._ids[key] = len(self._keys)
            self._keys.append(key)
            self._base_attempts.append(0)
            self._base_connected.append(0)
        return key_id

    def _add(self, minute: _Minute, sign: int) -> None:
        for key_id, attempts, connected in zip(minute.ids, minute.attempts, minute.connected, strict=True):
            self._base_attempts[key_id] += sign * attempts
            self._base_connected[key_id] += sign * connected
