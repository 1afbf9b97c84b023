"""Rolling per-minute counts per key, with running baseline sums.

One evaluation needs, per key, each minute of the recent window (to test every suffix)
and the baseline's totals; an alert also needs the SIP code mix of its window and of the
baseline, to say which codes grew. The window is kept minute by minute; the baseline is
a running sum that adds the minute leaving the window and subtracts the minute leaving
the baseline, exactly what was added (never re-read), so it cannot drift.

Counts are a row's counters (``breakout.aggregate``), so a minute read from the mirror
goes in as it is. Minutes are stored sparsely, as flat arrays over the keys with attempts
in that minute: key id, attempts, connected and effective attempts (16 bytes a key); the
PDD sum and count (12 more) only in minutes where some key carried a PDD; the SIP
counters that are not zero, 4 bytes each, plus 4 bytes a key, only in minutes where some
key had SIP codes. Sources that send neither PDD nor SIP codes cost what the ASR alone
did; a key that sends both, with five distinct codes a minute, takes about 52 bytes per
minute, so a day of history for a thousand such keys is about 75 MB.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Mapping, Sequence

from breakout.aggregate import (
    ATTEMPTS,
    CONNECTED,
    EFFECTIVE,
    FIRST_SIP,
    PDD_CALLS,
    PDD_MS,
    SIP_LABELS,
    WIDTH,
    Counters,
    empty,
    widened,
)
from breakout.noc.rules import AlertKey

# A pair's row counters in one minute. A shorter sequence (a minute saved before the
# newer counters existed) has zeros for the rest, as a stored row has.
Counts = Sequence[int]
# Per (destination, provider): its counters in one minute, summed over customers and currencies.
PairCounts = Mapping[tuple[str, str], Counts]
# Per row position (ATTEMPTS, CONNECTED, EFFECTIVE, PDD_MS, PDD_CALLS): the count of each
# minute of the window, oldest first.
Window = dict[int, list[int]]
TRACKED = (ATTEMPTS, CONNECTED, EFFECTIVE, PDD_MS, PDD_CALLS)

# A non-zero SIP counter is packed as count << _SIP_BITS | its index in SIP_LABELS.
_SIP_BITS = max(1, (len(SIP_LABELS) - 1).bit_length())
_SIP_MASK = (1 << _SIP_BITS) - 1


def with_destination_totals(pairs: PairCounts) -> dict[AlertKey, Counts]:
    """The pairs' counts plus, per destination, all providers together (key ``(destination, None)``)."""
    keyed: dict[AlertKey, Counts] = {}
    totals: dict[str, list[int]] = {}
    for (destination, provider), counts in pairs.items():
        if counts[ATTEMPTS]:
            keyed[(destination, provider)] = counts
            total = totals.setdefault(destination, [])
            total.extend([0] * (len(counts) - len(total)))
            for index, count in enumerate(counts):
                total[index] += count
    keyed.update(((destination, None), tuple(total)) for destination, total in totals.items())
    return keyed


class _Minute:
    """One minute's counts of the keys that had attempts, as parallel arrays.

    The PDD arrays are empty in a minute where no key carried a PDD, the SIP arrays in one
    without SIP codes. Key ``i``'s SIP counters are ``sip[sip_ends[i - 1]:sip_ends[i]]``.
    """

    __slots__ = ("attempts", "connected", "effective", "ids", "pdd_calls", "pdd_ms", "sip", "sip_ends")

    def __init__(self, ids: list[int], rows: list[Counters]) -> None:
        self.ids = array("I", ids)
        self.attempts = array("I", (row[ATTEMPTS] for row in rows))
        self.connected = array("I", (row[CONNECTED] for row in rows))
        self.effective = array("I", (row[EFFECTIVE] for row in rows))
        with_pdd = any(row[PDD_CALLS] for row in rows)
        self.pdd_ms = array("Q", (row[PDD_MS] for row in rows) if with_pdd else ())
        self.pdd_calls = array("I", (row[PDD_CALLS] for row in rows) if with_pdd else ())
        self.sip = array("I")
        self.sip_ends = array("I")
        if any(any(row[FIRST_SIP:]) for row in rows):
            for row in rows:
                self.sip.extend(
                    count << _SIP_BITS | index for index, count in enumerate(row[FIRST_SIP:]) if count
                )
                self.sip_ends.append(len(self.sip))

    def add_to(self, total: Counters | array[int], offset: int, index: int, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) key ``index``'s counts to the row at ``total[offset:]``."""
        total[offset + ATTEMPTS] += sign * self.attempts[index]
        total[offset + CONNECTED] += sign * self.connected[index]
        total[offset + EFFECTIVE] += sign * self.effective[index]
        if self.pdd_calls:
            total[offset + PDD_MS] += sign * self.pdd_ms[index]
            total[offset + PDD_CALLS] += sign * self.pdd_calls[index]
        if self.sip_ends:
            for packed in self.sip[self.sip_ends[index - 1] if index else 0 : self.sip_ends[index]]:
                total[offset + FIRST_SIP + (packed & _SIP_MASK)] += sign * (packed >> _SIP_BITS)


class RollingSeries:
    """The last ``window + baseline`` minutes, pushed one consecutive minute at a time."""

    def __init__(self, window_minutes: int, baseline_minutes: int) -> None:
        self.window_minutes = window_minutes
        self.baseline_minutes = baseline_minutes
        self._ids: dict[AlertKey, int] = {}
        self._keys: list[AlertKey] = []
        self._minutes: deque[_Minute] = deque()
        self._baseline = array("q")  # a row of counters per key id, WIDTH apart

    def push(self, pairs: PairCounts) -> None:
        """Append the next minute (per pair counts); the oldest minute leaves the baseline."""
        keyed = with_destination_totals(pairs)
        ids = [self._id(key) for key in keyed]
        self._minutes.append(_Minute(ids, [widened(list(counts)) for counts in keyed.values()]))
        if len(self._minutes) > self.window_minutes:
            self._add(self._minutes[-self.window_minutes - 1], 1)
        if len(self._minutes) > self.window_minutes + self.baseline_minutes:
            self._add(self._minutes.popleft(), -1)

    def window(self) -> dict[AlertKey, Window]:
        """Per key with attempts in the window: its tracked counts per minute, oldest first.

        Lists always have ``window_minutes`` entries; minutes before the first push count 0.
        """
        size = self.window_minutes
        by_id: dict[int, Window] = {}
        for position, minute in self._recent():
            for key_id, attempts, connected, effective in zip(
                minute.ids, minute.attempts, minute.connected, minute.effective, strict=True
            ):
                series = by_id.get(key_id)
                if series is None:
                    zeros = [0] * size
                    series = by_id[key_id] = {field: zeros.copy() for field in TRACKED}
                series[ATTEMPTS][position] = attempts
                series[CONNECTED][position] = connected
                series[EFFECTIVE][position] = effective
            if minute.pdd_calls:
                for key_id, pdd_ms, pdd_calls in zip(
                    minute.ids, minute.pdd_ms, minute.pdd_calls, strict=True
                ):
                    by_id[key_id][PDD_MS][position] = pdd_ms
                    by_id[key_id][PDD_CALLS][position] = pdd_calls
        return {self._keys[key_id]: series for key_id, series in by_id.items()}

    def baseline(self, key: AlertKey) -> Counters:
        """The counters of ``key`` summed over the baseline minutes (before the window).

        Only what the detector keeps: attempts, connected, effective, PDD and SIP codes.
        """
        key_id = self._ids.get(key)
        if key_id is None:
            return empty()
        return self._baseline[key_id * WIDTH : (key_id + 1) * WIDTH].tolist()

    def window_total(self, key: AlertKey, oldest: int) -> Counters:
        """The counters of ``key`` summed over the window's minutes from position ``oldest`` on."""
        total = empty()
        key_id = self._ids.get(key)
        if key_id is None:
            return total
        for position, minute in self._recent():
            if position >= oldest and key_id in minute.ids:
                minute.add_to(total, 0, minute.ids.index(key_id), 1)
        return total

    def _recent(self) -> list[tuple[int, _Minute]]:
        """The window's minutes with their positions in it (the first minutes may be missing)."""
        count = len(self._minutes)
        first = max(0, count - self.window_minutes)
        offset = self.window_minutes - (count - first)
        return [(offset + i - first, self._minutes[i]) for i in range(first, count)]

    def _id(self, key: AlertKey) -> int:
        key_id = self._ids.get(key)
        if key_id is None:
            key_id = self._ids[key] = len(self._keys)
            self._keys.append(key)
            self._baseline.extend([0] * WIDTH)
        return key_id

    def _add(self, minute: _Minute, sign: int) -> None:
        for index, key_id in enumerate(minute.ids):
            minute.add_to(self._baseline, key_id * WIDTH, index, sign)
