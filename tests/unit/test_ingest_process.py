from collections import Counter

from breakout.settings import Settings
from streams.ingest_process import IngestProcess, Progress, Report, Reports


def test_reports_add_to_the_worker_counters_and_replace_the_offsets_in_place() -> None:
    counters = Counter({"duplicates": 4, "accepted": 10})  # the agent counts into the same Counter
    ingest = IngestProcess(Settings(), counters)
    held_by_the_lag_reporter = ingest.committed

    ingest._take(({"accepted": 5, "rejected:invalid_json": 1}, 1_700_000_000_000, {0: 12, 1: 7}))
    ingest._take(({"accepted": 2}, 1_700_000_001_000, {1: 9}))  # partition 0 revoked meanwhile

    assert counters == Counter({"duplicates": 4, "accepted": 17, "rejected:invalid_json": 1})
    assert ingest.newest_event_ms == 1_700_000_001_000
    assert held_by_the_lag_reporter is ingest.committed
    assert held_by_the_lag_reporter == {1: 9}


def test_the_child_reports_only_what_moved() -> None:
    counters: Counter[str] = Counter()
    progress: Progress = (None, {0: -1})
    sent: list[Report] = []
    report = Reports(counters, lambda: progress, sent.append)

    report()  # the first report says where the ingest starts
    report()  # idle: nothing moved, nothing sent
    counters["accepted"] += 3
    report()  # a poll sent: its counts, before its commit moves the offsets
    progress = (1_700_000_000_000, {0: 3})
    report()  # the clock, after the commit
    report()

    assert sent == [
        ({}, None, {0: -1}),
        ({"accepted": 3}, None, {0: -1}),
        ({}, 1_700_000_000_000, {0: 3}),
    ]
