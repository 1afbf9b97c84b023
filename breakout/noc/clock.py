"""When a minute may be evaluated: the mirror's watermark, read without being held back by idle partitions.

Detection runs on event time. The mirror records, per internal-topic partition, the
stream time its rows are complete up to and the last offset they include. The slowest
partition decides, except a partition whose mirrored offset is the last one in its log:
it has nothing unmirrored, so waiting for it would only stall detection (a customer
partition that is quiet at night), and it is left out.
"""

from __future__ import annotations

from collections.abc import Mapping


def effective_watermark(marks: Mapping[int, tuple[int, int]], end_offsets: Mapping[int, int]) -> int | None:
    """Event time (ms) up to which every partition's rows are mirrored, or None if unknown yet.

    ``marks``: partition → (event_ms, offset) from the mirror's watermark hash;
    ``end_offsets``: partition → its log-end offset (the next offset to be written).
    """
    pending: list[int] = []
    latest: int | None = None
    for partition, end in end_offsets.items():
        mark = marks.get(partition)
        if mark is None:
            if end > 0:
                return None  # messages that no mirror flush has covered yet
            continue
        event_ms, offset = mark
        latest = event_ms if latest is None else max(latest, event_ms)
        if offset < end - 1:
            pending.append(event_ms)
    return min(pending) if pending else latest


def due_minutes(next_minute: int, watermark_ms: int, settle_seconds: int, limit: int) -> list[int]:
    """Starts of the minutes, from ``next_minute`` on, that ended ``settle_seconds`` before the watermark.

    At most ``limit``, in order: the detector takes minutes one at a time even when the
    watermark jumps ahead, so its results do not depend on how fast it catches up.
    """
    last = (watermark_ms // 1000 - settle_seconds) // 60 * 60 - 60
    return list(range(next_minute, min(last, next_minute + (limit - 1) * 60) + 1, 60))


def may_be_due(next_minute: int, marks: Mapping[int, tuple[int, int]], settle_seconds: int) -> bool:
    """Whether ``next_minute`` can be due by ``marks`` (as in ``effective_watermark``) alone.

    The effective watermark is never past the newest mark, so while that has not passed the
    minute's end by ``settle_seconds``, no minute is due whatever the log-end offsets are:
    a live detector asks the broker for them once a minute, not at every round.
    """
    newest = max((event_ms for event_ms, _ in marks.values()), default=None)
    return newest is not None and bool(due_minutes(next_minute, newest, settle_seconds, 1))
