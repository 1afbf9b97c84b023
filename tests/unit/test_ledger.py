"""Exactly-once application of one partition's records to its buckets."""

from __future__ import annotations

from typing import Any

import pytest

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, Outcome, PartitionLedger, row_id, row_parts
from breakout.normalize import Record

M, H, D = Granularity.MINUTE, Granularity.HOUR, Granularity.DAY
PARTITION = 3
RETENTION = Retention(minute=172_800, hour=3_024_000, day=34_560_000)
WINDOW_MS = 7 * 86_400_000
DAY_MS = 86_400_000

T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z: on a minute and an hour boundary
M0 = H0 = 1_795_597_200  # minute and hour bucket of T0 (epoch seconds)
D0 = 1_795_564_800  # day bucket of T0 (2026-11-25T00:00:00Z)
MINUTE_GONE = M0 + 60 + 172_800  # stream time (s) at which T0's minute bucket expires
HOUR_GONE = H0 + 3600 + 3_024_000
DAY_GONE = D0 + 86400 + 34_560_000

UK = row_id("UK", "p1", "EUR")


def rec(cdr_id: str, customer: str = "A", start_ms: int = T0, **changes: Any) -> Record:
    """A normalized record: a connected one-minute UK call costing 10 and billed 15 micro-units."""
    base = Record(
        id=cdr_id,
        customer_id=customer,
        provider_id="p1",
        destination="UK",
        currency="EUR",
        start_ms=start_ms,
        connected=True,
        duration_ms=60_000,
        provider_charge=10,
        customer_charge=15,
        dtmf=0,
    )
    return base._replace(**changes)


def key(granularity: Granularity, customer: str = "A", start: int | None = None) -> BucketKey:
    if start is None:
        start = {M: M0, H: H0, D: D0}[granularity]
    return BucketKey(PARTITION, granularity, start, customer)


def keys(customer: str = "A", *granularities: Granularity) -> list[BucketKey]:
    return [key(g, customer) for g in granularities or (M, H, D)]


def new_ledger() -> PartitionLedger:
    return PartitionLedger(PARTITION, RETENTION, WINDOW_MS)


def copy(bucket: CustomerBucket) -> CustomerBucket:
    return CustomerBucket.decode(bucket.encode())


class Store:
    """The agent's tables, in memory: bucket values, dedup batches and stream time."""

    def __init__(self) -> None:
        self.rows: dict[BucketKey, CustomerBucket] = {}
        self.seen: dict[int, tuple[int, list[str]]] = {}
        self.stream_ms = 0
        self.offset = -1

    def read(self, bucket_key: BucketKey) -> CustomerBucket | None:
        bucket = self.rows.get(bucket_key)
        return None if bucket is None else copy(bucket)  # the ledger mutates what it reads

    def apply(self, ledger: PartitionLedger, offset: int, *records: Record) -> Outcome:
        """Apply one message and store what it changed, as streams/agents.py does."""
        outcome = ledger.apply(offset, records, self.read)
        for bucket_key, bucket in outcome.updates.items():
            self.rows[bucket_key] = copy(bucket)
        for bucket_key in outcome.deletions:
            self.rows.pop(bucket_key, None)
        if outcome.counted_ids:
            self.seen[offset] = (ledger.stream_ms, list(outcome.counted_ids))
        for forgotten in outcome.forgotten_offsets:
            self.seen.pop(forgotten, None)
        self.stream_ms = ledger.stream_ms
        self.offset = ledger.offset
        return outcome

    def restored(self) -> PartitionLedger:
        """A fresh ledger rebuilt from the tables, as after a restart or a rebalance."""
        ledger = new_ledger()
        ledger.restore(
            self.stream_ms, self.offset, list(self.rows), [(o, t, ids) for o, (t, ids) in self.seen.items()]
        )
        return ledger

    def snapshot(self) -> dict[BucketKey, bytes]:
        return {k: v.encode() for k, v in self.rows.items()}


# A message of three CDRs: two for customer A (one unanswered), one for B to the US.
MESSAGE = (
    rec("c1"),
    rec("c2", connected=False, duration_ms=0),
    rec("c3", customer="B", destination="US"),
)
A_ROWS = {UK: [2, 1, 60_000, 20, 30, 0, 0]}
B_ROWS = {row_id("US", "p1", "EUR"): [1, 1, 60_000, 10, 15, 0, 0]}


def applied_once(offset: int = 7) -> tuple[Store, PartitionLedger, Outcome]:
    store, ledger = Store(), new_ledger()
    outcome = store.apply(ledger, offset, *MESSAGE)
    return store, ledger, outcome


# --- (1) applying a message -------------------------------------------------------------


def test_apply_creates_three_buckets_per_customer() -> None:
    _, ledger, outcome = applied_once(offset=7)
    assert outcome.updates == {
        **{k: CustomerBucket(7, A_ROWS) for k in keys("A")},
        **{k: CustomerBucket(7, B_ROWS) for k in keys("B")},
    }
    assert outcome.counted_ids == ["c1", "c2", "c3"]
    assert (outcome.duplicates, outcome.replayed) == (0, 0)
    assert (outcome.deletions, outcome.forgotten_offsets, outcome.too_late) == ([], [], [])
    assert ledger.stream_ms == T0


@pytest.mark.parametrize(
    "records, expected_rows",
    [
        ([rec("a")], {UK: [1, 1, 60_000, 10, 15, 0, 0]}),
        ([rec("a", customer_charge=None)], {UK: [1, 1, 60_000, 0, 0, 1, 0]}),  # pending
        ([rec("a", dtmf=4)], {UK: [1, 1, 60_000, 10, 15, 0, 1]}),
        ([rec("a", connected=False, duration_ms=5_000)], {UK: [1, 0, 0, 10, 15, 0, 0]}),
        (
            [rec("a"), rec("b", provider_id="p2"), rec("c", currency="USD")],
            {
                UK: [1, 1, 60_000, 10, 15, 0, 0],
                row_id("UK", "p2", "EUR"): [1, 1, 60_000, 10, 15, 0, 0],
                row_id("UK", "p1", "USD"): [1, 1, 60_000, 10, 15, 0, 0],
            },
        ),
    ],
)
def test_apply_counters_per_row(records: list[Record], expected_rows: dict[Any, list[int]]) -> None:
    outcome = Store().apply(new_ledger(), 0, *records)
    assert outcome.updates == {k: CustomerBucket(0, expected_rows) for k in keys("A")}


def test_apply_adds_to_stored_bucket_and_moves_applied() -> None:
    store, ledger, _ = applied_once(offset=7)
    outcome = store.apply(ledger, 9, rec("c4"))
    assert outcome.updates == {k: CustomerBucket(9, {UK: [3, 2, 120_000, 30, 45, 0, 0]}) for k in keys("A")}
    assert store.rows[key(M, "B")] == CustomerBucket(7, B_ROWS)  # untouched


def test_buckets_split_by_time() -> None:
    outcome = Store().apply(new_ledger(), 0, rec("a"), rec("b", start_ms=T0 + 60_000))
    one = CustomerBucket(0, {UK: [1, 1, 60_000, 10, 15, 0, 0]})
    two = CustomerBucket(0, {UK: [2, 2, 120_000, 20, 30, 0, 0]})
    assert outcome.updates == {
        key(M): one,
        key(M, start=M0 + 60): one,
        key(H): two,
        key(D): two,
    }


def test_changed_rows_per_bucket() -> None:
    """The mirror writes only these rows: each bucket's own, the hour and day the union."""
    us = row_id("US", "p1", "EUR")
    store, ledger, _ = applied_once(offset=7)
    outcome = store.apply(
        ledger,
        8,
        rec("a"),
        rec("b", start_ms=T0 + 60_000, destination="US"),
        rec("c", customer="B", destination="US"),
    )
    assert outcome.changed_rows == {
        key(M): {UK},
        key(M, start=M0 + 60): {us},
        key(H): {UK, us},
        key(D): {UK, us},
        **{k: {us} for k in keys("B")},
    }


# --- (2) replaying the same offset --------------------------------------------------------


def test_replay_of_same_offset_changes_nothing() -> None:
    store, ledger, _ = applied_once(offset=7)
    before = store.snapshot()
    outcome = store.apply(ledger, 7, *MESSAGE)
    assert outcome.updates == {}
    assert outcome.replayed == 3
    assert outcome.duplicates == 0
    assert store.snapshot() == before


@pytest.mark.parametrize(
    "written, replayed",
    [
        ([], 0),  # crash before any write: the replay writes everything
        ([key(M, "A")], 2),  # crash after one write: c1 and c2 partly replayed
        (keys("A"), 2),
        ([key(D, "B")], 1),
        ([*keys("A"), *keys("B")], 3),  # every write made: a full replay
    ],
)
def test_replay_after_crash_between_writes_completes_the_message(
    written: list[BucketKey], replayed: int
) -> None:
    full, _, _ = applied_once(offset=7)
    crashed = Store()
    crashed.rows = {k: copy(full.rows[k]) for k in written}  # seen and stream time not yet written
    outcome = crashed.apply(crashed.restored(), 7, *MESSAGE)
    assert set(outcome.updates) == set(full.rows) - set(written)
    assert outcome.replayed == replayed
    assert crashed.snapshot() == full.snapshot()


# --- (3, 4) duplicate CDR ids ----------------------------------------------------------


@pytest.mark.parametrize(
    "records, duplicates, counted, a_rows",
    [
        ([rec("c1")], 1, [], A_ROWS),  # the same id at a later offset
        ([rec("c3", customer="A")], 1, [], A_ROWS),  # the id decides, not the content
        ([rec("c1"), rec("c4")], 1, ["c4"], {UK: [3, 2, 120_000, 30, 45, 0, 0]}),
        ([rec("c4"), rec("c4")], 1, ["c4"], {UK: [3, 2, 120_000, 30, 45, 0, 0]}),
    ],
)
def test_duplicate_id_at_later_offset(
    records: list[Record], duplicates: int, counted: list[str], a_rows: dict[Any, list[int]]
) -> None:
    store, ledger, _ = applied_once(offset=7)
    outcome = store.apply(ledger, 8, *records)
    assert outcome.duplicates == duplicates
    assert outcome.counted_ids == counted
    assert store.rows[key(H)].rows == a_rows


def test_same_id_twice_in_one_message_counts_once() -> None:
    outcome = Store().apply(new_ledger(), 0, rec("x"), rec("x", customer="B"), rec("x"))
    assert outcome.duplicates == 2
    assert outcome.counted_ids == ["x"]
    assert outcome.updates == {k: CustomerBucket(0, {UK: [1, 1, 60_000, 10, 15, 0, 0]}) for k in keys("A")}


# --- (5) a restored ledger -----------------------------------------------------------------


def test_restored_ledger_detects_duplicate_and_replay() -> None:
    store, _, _ = applied_once(offset=7)
    store.apply(store.restored(), 8, rec("c4", customer="C"))
    before = store.snapshot()

    replay = store.apply(store.restored(), 7, *MESSAGE)
    assert (replay.updates, replay.replayed, replay.duplicates) == ({}, 3, 0)

    duplicate = store.apply(store.restored(), 9, rec("c1"), rec("c4"))
    assert (duplicate.updates, duplicate.duplicates, duplicate.counted_ids) == ({}, 2, [])
    assert store.snapshot() == before


def test_restore_sets_stream_time_and_live_buckets() -> None:
    store, _, _ = applied_once(offset=7)
    ledger = store.restored()
    assert ledger.stream_ms == T0
    # the restored buckets expire with stream time although this ledger never wrote them
    outcome = store.apply(ledger, 8, rec("later", customer="Z", start_ms=MINUTE_GONE * 1000))
    assert sorted(outcome.deletions, key=lambda k: k.customer) == [key(M, "A"), key(M, "B")]


# --- (6, 7) late CDRs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream_s, granularities",
    [
        (M0, {M, H, D}),
        (MINUTE_GONE - 1, {M, H, D}),
        (MINUTE_GONE, {H, D}),
        (M0 + 3 * 86_400, {H, D}),  # three days later: hour and day buckets only
        (HOUR_GONE - 1, {H, D}),
        (HOUR_GONE, {D}),
        (DAY_GONE - 1, {D}),
    ],
)
def test_late_cdr_lands_in_kept_buckets(stream_s: int, granularities: set[Granularity]) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("now", customer="Z", start_ms=stream_s * 1000))
    late = rec("late")
    outcome = store.apply(ledger, 1, late)
    assert {k.granularity for k in outcome.updates} == granularities
    assert all(k.customer == "A" and k.start == key(k.granularity).start for k in outcome.updates)
    assert outcome.too_late == []
    assert outcome.counted_ids == ["late"]
    assert ledger.stream_ms == stream_s * 1000  # a late CDR never moves stream time back


@pytest.mark.parametrize("stream_s", [DAY_GONE, DAY_GONE + 1, DAY_GONE + 365 * 86_400])
def test_cdr_older_than_all_retention_is_too_late(stream_s: int) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("now", customer="Z", start_ms=stream_s * 1000))
    late = rec("late")
    outcome = store.apply(ledger, 1, late, rec("fresh", start_ms=stream_s * 1000))
    assert outcome.too_late == [late]
    assert outcome.counted_ids == ["fresh"]
    assert all(k.start >= stream_s // 86_400 * 86_400 for k in outcome.updates)


def test_too_late_is_decided_from_the_newest_cdr_of_the_first_message() -> None:
    # A new deployment's first message: the old CDR comes first, the current one after it.
    store, ledger = Store(), new_ledger()
    late = rec("late")
    now = rec("now", customer="Z", start_ms=DAY_GONE * 1000)
    outcome = store.apply(ledger, 0, late, now)
    assert outcome.too_late == [late]
    assert outcome.counted_ids == ["now"]
    assert all(k.customer == "Z" for k in store.rows)  # nothing of the old CDR was kept


def test_too_late_of_a_replayed_message_is_reported_once() -> None:
    store, ledger = Store(), new_ledger()
    late = rec("late")
    now = rec("now", customer="Z", start_ms=DAY_GONE * 1000)
    assert store.apply(ledger, 0, late, now).too_late == [late]
    assert store.restored().apply(0, [late, now], store.read).too_late == []
    assert store.apply(ledger, 1, late).too_late == [late]  # the same CDR sent again: refused again


# --- (8) expiry of buckets and of dedup ids ----------------------------------------------


@pytest.mark.parametrize(
    "stream_s, deleted",
    [
        (MINUTE_GONE - 1, []),  # one second before the minute bucket expires
        (MINUTE_GONE, [key(M)]),
        (HOUR_GONE - 1, [key(M)]),
        (HOUR_GONE, [key(M), key(H)]),
        (DAY_GONE, [key(M), key(H), key(D)]),
    ],
)
def test_expiry_lists_deletions(stream_s: int, deleted: list[BucketKey]) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("old"))
    outcome = store.apply(ledger, 1, rec("now", customer="Z", start_ms=stream_s * 1000))
    assert outcome.deletions == deleted
    assert set(store.rows) == (set(keys("A")) - set(deleted)) | set(outcome.updates)


def test_expired_bucket_is_deleted_once() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("old"))
    first = store.apply(ledger, 1, rec("n1", customer="Z", start_ms=MINUTE_GONE * 1000))
    second = store.apply(ledger, 2, rec("n2", customer="Z", start_ms=MINUTE_GONE * 1000 + 1000))
    assert first.deletions == [key(M)]
    assert second.deletions == []


@pytest.mark.parametrize(
    "advance_ms, forgotten, recounted",
    [
        (WINDOW_MS, [], False),  # exactly one window later: still a duplicate
        (WINDOW_MS + 1, [0], True),  # past the window: forgotten, counted again
        (WINDOW_MS + DAY_MS, [0], True),
    ],
)
def test_dedup_window(advance_ms: int, forgotten: list[int], recounted: bool) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    later = T0 + advance_ms
    outcome = store.apply(ledger, 1, rec("y", customer="Z", start_ms=later))
    assert outcome.forgotten_offsets == forgotten
    assert (0 in store.seen) is not recounted

    again = store.apply(ledger, 2, rec("x", start_ms=later))
    assert again.duplicates == (0 if recounted else 1)
    assert again.counted_ids == (["x"] if recounted else [])
    if recounted:
        day_key = key(D, start=later // 1000 // 86_400 * 86_400)
        assert again.updates[day_key] == CustomerBucket(2, {UK: [1, 1, 60_000, 10, 15, 0, 0]})


def test_dedup_forgets_batches_in_offset_order() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("a"))
    store.apply(ledger, 1, rec("b", start_ms=T0 + DAY_MS))
    store.apply(ledger, 2, rec("c", start_ms=T0 + 2 * DAY_MS))
    outcome = store.apply(ledger, 3, rec("d", start_ms=T0 + DAY_MS + WINDOW_MS + 1))
    assert outcome.forgotten_offsets == [0, 1]
    assert sorted(store.seen) == [2, 3]


# --- (9) encodings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket_key, encoded",
    [
        (BucketKey(3, M, 1_795_597_200, "cust-1"), b"3|m|1795597200|cust-1"),
        (BucketKey(0, H, 0, ""), b"0|h|0|"),
        (BucketKey(12, D, 1_795_564_800, "a|b|c"), b"12|d|1795564800|a|b|c"),
        (BucketKey(1, D, 86_400, "caf\u00e9 \u00fc"), "1|d|86400|caf\u00e9 \u00fc".encode()),
    ],
)
def test_bucket_key_round_trip(bucket_key: BucketKey, encoded: bytes) -> None:
    assert bucket_key.encode() == encoded
    assert BucketKey.decode(encoded) == bucket_key


@pytest.mark.parametrize(
    "bucket, encoded",
    [
        (CustomerBucket(), b'{"o":-1,"r":{}}'),
        (
            CustomerBucket(7, {UK: [2, 1, 60_000, 20, 30, 0, 0]}),
            b'{"o":7,"r":{"[\\"UK\\",\\"p1\\",\\"EUR\\"]":[2,1,60000,20,30,0,0]}}',
        ),
        (
            CustomerBucket(
                42,
                {
                    row_id("Unknown", "", "USD"): [1, 0, 0, 0, 0, 1, 0],
                    row_id("A|B \u00e9", "p|2", "GBP"): [9, 8, 7, 6, 5, 4, 3],
                },
            ),
            None,
        ),
    ],
)
def test_customer_bucket_round_trip(bucket: CustomerBucket, encoded: bytes | None) -> None:
    if encoded is not None:
        assert bucket.encode() == encoded
    assert CustomerBucket.decode(bucket.encode()) == bucket


@pytest.mark.parametrize(
    "parts", [("UK", "p1", "EUR"), ("", "", "USD"), ('A"|\\B \u00e9', "p,2]", "GBP"), ("[", "]", "\u0000")]
)
def test_row_id_round_trip(parts: tuple[str, str, str]) -> None:
    assert row_parts(row_id(*parts)) == parts


def test_customer_bucket_decodes_the_earlier_list_format() -> None:
    """Tables (and their changelogs) written by earlier versions still restore."""
    old = b'{"o":7,"r":[["UK","p1","EUR",2,1,60000,20,30,0,0],["A|B","","USD",1,0,0,0,0,1,0]]}'
    assert CustomerBucket.decode(old) == CustomerBucket(
        7, {UK: [2, 1, 60_000, 20, 30, 0, 0], row_id("A|B", "", "USD"): [1, 0, 0, 0, 0, 1, 0]}
    )
