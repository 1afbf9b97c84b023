"""The counts the detector used for one minute, as saved in Redis (``{app}:alerts:minute:{start}``).

A detector rebuilding its history after a restart reads these instead of the mirror, so
a restart cannot change a decision. Only what the detector keeps is saved: per pair
``[destination, provider, attempts, connected, effective, pdd_ms, pdd_calls, {code: count}]``
with only the SIP codes that occurred, by label, so the record stays small and means the
same if the code catalogue grows. Minutes saved before NER, PDD and SIP codes were watched
hold ``[destination, provider, attempts, connected]``: they load with zeros for the rest,
as old mirror rows do.
"""

from __future__ import annotations

import orjson

from breakout.aggregate import (
    ATTEMPTS,
    CONNECTED,
    EFFECTIVE,
    FIRST_SIP,
    PDD_CALLS,
    PDD_MS,
    SIP_LABELS,
    Counters,
    empty,
)
from breakout.noc.series import PairCounts

_SAVED = (ATTEMPTS, CONNECTED, EFFECTIVE, PDD_MS, PDD_CALLS)
_SIP_SLOT = {label: FIRST_SIP + index for index, label in enumerate(SIP_LABELS)}


def encode_minute(pairs: PairCounts) -> bytes:
    records = []
    for (destination, provider), counts in pairs.items():
        row = [counts[field] if field < len(counts) else 0 for field in _SAVED]
        codes = {label: count for label, count in zip(SIP_LABELS, counts[FIRST_SIP:], strict=False) if count}
        records.append([destination, provider, *row, codes])
    return orjson.dumps(records)


def decode_minute(raw: bytes | str) -> dict[tuple[str, str], Counters]:
    """The pairs' counters of a saved minute, as rows (what the detector keeps; the rest zero)."""
    pairs: dict[tuple[str, str], Counters] = {}
    for destination, provider, *values in orjson.loads(raw):
        row = empty()
        codes = values.pop() if values and isinstance(values[-1], dict) else {}
        for field, value in zip(_SAVED, values, strict=False):
            row[field] = value
        for label, count in codes.items():
            slot = _SIP_SLOT.get(label, _SIP_SLOT.get(label[:1] + "xx"))
            if slot is not None:
                row[slot] += count
        pairs[(destination, provider)] = row
    return pairs
