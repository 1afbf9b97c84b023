"""Exactly-once application of one partition's records to its buckets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from breakout.aggregate import FIRST_SIP, sip_slot, widened
from breakout.buckets import Granularity, Retention
from breakout.ledger import (
    REVISION_UNKNOWN,
    TOO_LATE,
    BucketKey,
    CustomerBucket,
    Outcome,
    PartitionLedger,
    VersionKey,
    row_id,
    row_parts,
)
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
    """The agent's tables and id store, in memory: bucket values, versions and stream time."""

    def __init__(self) -> None:
        self.rows: dict[BucketKey, CustomerBucket] = {}
        self.ids: dict[VersionKey, bytes] = {}
        self.stream_ms = 0
        self.offset = -1

    def lookup(self, version_keys: list[VersionKey]) -> list[bytes | None]:
        return [self.ids.get(k) for k in version_keys]

    def read(self, bucket_key: BucketKey) -> CustomerBucket | None:
        bucket = self.rows.get(bucket_key)
        return None if bucket is None else copy(bucket)  # the ledger mutates what it reads

    def apply(self, ledger: PartitionLedger, offset: int, *records: Record) -> Outcome:
        """Apply one message and store what it changed, as streams/agents.py does."""
        outcome = ledger.apply(offset, records, self.read, self.lookup)
        for bucket_key, bucket in outcome.updates.items():
            self.rows[bucket_key] = copy(bucket)
        for bucket_key in outcome.deletions:
            self.rows.pop(bucket_key, None)
        self.ids.update(outcome.versions)
        ledger.stored(outcome.versions)
        self.stream_ms = ledger.stream_ms
        self.offset = ledger.offset
        return outcome

    def restored(self) -> PartitionLedger:
        """A fresh ledger rebuilt from the tables, as after a restart or a rebalance."""
        ledger = new_ledger()
        ledger.restore(self.stream_ms, self.offset, list(self.rows))
        return ledger

    def snapshot(self) -> dict[BucketKey, bytes]:
        return {k: v.encode() for k, v in self.rows.items()}


# A message of three CDRs: two for customer A (one unanswered), one for B to the US.
MESSAGE = (
    rec("c1"),
    rec("c2", connected=False, duration_ms=0),
    rec("c3", customer="B", destination="US"),
)
A_ROWS = {UK: widened([2, 1, 60_000, 20, 30, 0, 0])}
B_ROWS = {row_id("US", "p1", "EUR"): widened([1, 1, 60_000, 10, 15, 0, 0])}


def counted_ids(outcome: Outcome) -> list[str]:
    """The ids ``outcome`` counted a version of."""
    return [cdr_id for _, cdr_id in outcome.versions]


def refused(outcome: Outcome, reason: str = TOO_LATE) -> list[Record]:
    return [record for why, record in outcome.refused if why == reason]


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
    assert counted_ids(outcome) == ["c1", "c2", "c3"]
    assert (outcome.duplicates, outcome.replayed) == (0, 0)
    assert (outcome.deletions, outcome.refused) == ([], [])
    assert ledger.stream_ms == T0


@pytest.mark.parametrize(
    "records, expected_rows",
    [
        ([rec("a")], {UK: widened([1, 1, 60_000, 10, 15, 0, 0])}),
        ([rec("a", customer_charge=None)], {UK: widened([1, 1, 60_000, 0, 0, 1, 0])}),  # pending
        ([rec("a", dtmf=4)], {UK: widened([1, 1, 60_000, 10, 15, 0, 1])}),
        ([rec("a", connected=False, duration_ms=5_000)], {UK: widened([1, 0, 0, 10, 15, 0, 0])}),
        (
            [rec("a"), rec("b", provider_id="p2"), rec("c", currency="USD")],
            {
                UK: widened([1, 1, 60_000, 10, 15, 0, 0]),
                row_id("UK", "p2", "EUR"): widened([1, 1, 60_000, 10, 15, 0, 0]),
                row_id("UK", "p1", "USD"): widened([1, 1, 60_000, 10, 15, 0, 0]),
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
    assert outcome.updates == {
        k: CustomerBucket(9, {UK: widened([3, 2, 120_000, 30, 45, 0, 0])}) for k in keys("A")
    }
    assert store.rows[key(M, "B")] == CustomerBucket(7, B_ROWS)  # untouched


def test_buckets_split_by_time() -> None:
    outcome = Store().apply(new_ledger(), 0, rec("a"), rec("b", start_ms=T0 + 60_000))
    one = CustomerBucket(0, {UK: widened([1, 1, 60_000, 10, 15, 0, 0])})
    two = CustomerBucket(0, {UK: widened([2, 2, 120_000, 20, 30, 0, 0])})
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
        ([rec("c1", destination="US")], 1, [], A_ROWS),  # the id and revision decide, not the content
        ([rec("c3")], 0, ["c3"], {UK: widened([3, 2, 120_000, 30, 45, 0, 0])}),  # ids are per customer
        ([rec("c1"), rec("c4")], 1, ["c4"], {UK: widened([3, 2, 120_000, 30, 45, 0, 0])}),
        ([rec("c4"), rec("c4")], 1, ["c4"], {UK: widened([3, 2, 120_000, 30, 45, 0, 0])}),
    ],
)
def test_duplicate_id_at_later_offset(
    records: list[Record], duplicates: int, counted: list[str], a_rows: dict[Any, list[int]]
) -> None:
    store, ledger, _ = applied_once(offset=7)
    outcome = store.apply(ledger, 8, *records)
    assert outcome.duplicates == duplicates
    assert counted_ids(outcome) == counted
    assert store.rows[key(H)].rows == a_rows


def test_same_id_twice_in_one_message_counts_once() -> None:
    outcome = Store().apply(new_ledger(), 0, rec("x"), rec("x", customer="B"), rec("x"))
    assert outcome.duplicates == 1
    assert list(outcome.versions) == [("A", "x"), ("B", "x")]
    assert outcome.updates == {
        k: CustomerBucket(0, {UK: widened([1, 1, 60_000, 10, 15, 0, 0])}) for k in [*keys("A"), *keys("B")]
    }


# --- (5) a restored ledger -----------------------------------------------------------------


def test_restored_ledger_detects_duplicate_and_replay() -> None:
    store, _, _ = applied_once(offset=7)
    store.apply(store.restored(), 8, rec("c4", customer="C"))
    before = store.snapshot()

    replay = store.apply(store.restored(), 7, *MESSAGE)
    assert (replay.updates, replay.replayed, replay.duplicates) == ({}, 3, 0)

    duplicate = store.apply(store.restored(), 9, rec("c1"), rec("c4", customer="C"))
    assert (duplicate.updates, duplicate.duplicates, counted_ids(duplicate)) == ({}, 2, [])
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
    assert outcome.refused == []
    assert counted_ids(outcome) == ["late"]
    assert ledger.stream_ms == stream_s * 1000  # a late CDR never moves stream time back


@pytest.mark.parametrize("stream_s", [DAY_GONE, DAY_GONE + 1, DAY_GONE + 365 * 86_400])
def test_cdr_older_than_all_retention_is_too_late(stream_s: int) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("now", customer="Z", start_ms=stream_s * 1000))
    late = rec("late")
    outcome = store.apply(ledger, 1, late, rec("fresh", start_ms=stream_s * 1000))
    assert refused(outcome) == [late]
    assert counted_ids(outcome) == ["fresh"]
    assert all(k.start >= stream_s // 86_400 * 86_400 for k in outcome.updates)


def test_too_late_is_decided_from_the_newest_cdr_of_the_first_message() -> None:
    # A new deployment's first message: the old CDR comes first, the current one after it.
    store, ledger = Store(), new_ledger()
    late = rec("late")
    now = rec("now", customer="Z", start_ms=DAY_GONE * 1000)
    outcome = store.apply(ledger, 0, late, now)
    assert refused(outcome) == [late]
    assert counted_ids(outcome) == ["now"]
    assert all(k.customer == "Z" for k in store.rows)  # nothing of the old CDR was kept


def test_too_late_of_a_replayed_message_is_reported_once() -> None:
    store, ledger = Store(), new_ledger()
    late = rec("late")
    now = rec("now", customer="Z", start_ms=DAY_GONE * 1000)
    assert refused(store.apply(ledger, 0, late, now)) == [late]
    assert store.restored().apply(0, [late, now], store.read, store.lookup).refused == []
    assert refused(store.apply(ledger, 1, late)) == [late]  # the same CDR sent again: refused again


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
    "advance_ms, recounted",
    [
        (WINDOW_MS, False),  # exactly one window later: still a duplicate
        (WINDOW_MS + 1, True),  # past the window: forgotten, counted again
        (WINDOW_MS + DAY_MS, True),
    ],
)
def test_dedup_window(advance_ms: int, recounted: bool) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    later = T0 + advance_ms
    store.apply(ledger, 1, rec("y", customer="Z", start_ms=later))
    assert ledger.horizon_ms == later - WINDOW_MS

    again = store.apply(ledger, 2, rec("x", start_ms=later))
    assert again.duplicates == (0 if recounted else 1)
    assert counted_ids(again) == (["x"] if recounted else [])
    if recounted:
        day_key = key(D, start=later // 1000 // 86_400 * 86_400)
        assert again.updates[day_key] == CustomerBucket(2, {UK: widened([1, 1, 60_000, 10, 15, 0, 0])})


def test_dedup_window_counts_from_the_stream_time_an_id_was_counted_at() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("a"))
    store.apply(ledger, 1, rec("b", start_ms=T0 + DAY_MS))
    store.apply(ledger, 2, rec("c", start_ms=T0 + 2 * DAY_MS))
    store.apply(ledger, 3, rec("d", start_ms=T0 + DAY_MS + WINDOW_MS + 1))
    again = store.apply(ledger, 4, *(rec(i, start_ms=T0 + 3 * DAY_MS) for i in "abcd"))
    assert counted_ids(again) == ["a", "b"]  # counted at T0 and T0 + 1 day: forgotten
    assert again.duplicates == 2


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
            CustomerBucket(7, {UK: widened([2, 1, 60_000, 20, 30, 0, 0])}),
            b'{"o":7,"r":{"[\\"UK\\",\\"p1\\",\\"EUR\\"]":[2,1,60000,20,30' + b",0" * 26 + b"]}}",
        ),
        (
            CustomerBucket(
                42,
                {
                    row_id("Unknown", "", "USD"): widened([1, 0, 0, 0, 0, 1, 0]),
                    row_id("A|B \u00e9", "p|2", "GBP"): widened([9, 8, 7, 6, 5, 4, 3]),
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
        7,
        {UK: widened([2, 1, 60_000, 20, 30, 0, 0]), row_id("A|B", "", "USD"): widened([1, 0, 0, 0, 0, 1, 0])},
    )


# --- (10) revisions ------------------------------------------------------------------------

ZERO = widened([])
US = row_id("US", "p1", "EUR")
LATER_MS = T0 + DAY_MS + 3_600_000 + 60_000  # another minute, hour and day
LATER = {M: (LATER_MS // 60_000) * 60, H: (LATER_MS // 3_600_000) * 3600, D: (LATER_MS // DAY_MS) * 86_400}


def later_keys(customer: str = "A") -> list[BucketKey]:
    return [key(g, customer, LATER[g]) for g in (M, H, D)]


def rows_of(store: Store, bucket_keys: list[BucketKey]) -> list[dict[str, list[int]]]:
    return [store.rows[k].rows for k in bucket_keys]


def test_rating_completes_a_pending_cdr() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x", customer_charge=None))
    assert rows_of(store, keys()) == [{UK: widened([1, 1, 60_000, 0, 0, 1, 0])}] * 3
    outcome = store.apply(ledger, 1, rec("x"))
    assert (outcome.revised, outcome.duplicates) == (1, 0)
    assert rows_of(store, keys()) == [{UK: widened([1, 1, 60_000, 10, 15, 0, 0])}] * 3
    assert outcome.changed_rows == {k: {UK} for k in keys()}


@pytest.mark.parametrize(
    "first, again",
    [
        (rec("x"), rec("x", customer_charge=None)),  # pending after rated, same revision
        (rec("x"), rec("x", customer_charge=99)),  # rated again at the same revision
        (rec("x", revision=2), rec("x", revision=1, customer_charge=99)),  # an older revision
        (rec("x", customer_charge=None), rec("x", customer_charge=None)),
    ],
)
def test_anything_but_a_revision_is_a_duplicate(first: Record, again: Record) -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, first._replace(revision=0) if first.revision == 2 else first)
    if first.revision == 2:
        store.apply(ledger, 1, first)
    before = store.snapshot()
    outcome = store.apply(ledger, 5, again)
    assert (outcome.duplicates, outcome.revised, outcome.updates) == (1, 0, {})
    assert store.snapshot() == before


def test_a_higher_revision_moves_the_contribution() -> None:
    """Re-rated with another destination, provider, currency, start time and charge."""
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"), rec("y"))
    revised = rec(
        "x", revision=1, destination="US", start_ms=LATER_MS, provider_charge=7, customer_charge=9, dtmf=2
    )
    outcome = store.apply(ledger, 1, revised)
    assert outcome.revised == 1
    assert rows_of(store, keys()) == [{UK: widened([1, 1, 60_000, 10, 15, 0, 0])}] * 3  # only y is left
    assert rows_of(store, later_keys()) == [{US: widened([1, 1, 60_000, 7, 9, 0, 1])}] * 3
    assert outcome.changed_rows == {**{k: {UK} for k in keys()}, **{k: {US} for k in later_keys()}}

    store.apply(ledger, 2, rec("y", revision=3, destination="US", start_ms=LATER_MS))
    assert rows_of(store, keys()) == [{UK: ZERO}] * 3  # a row of zeros: reports leave it out
    assert rows_of(store, later_keys()) == [{US: widened([2, 2, 120_000, 17, 24, 0, 1])}] * 3


def test_revisions_in_one_message_count_the_last() -> None:
    store, ledger = Store(), new_ledger()
    outcome = store.apply(ledger, 0, rec("x", customer_charge=None), rec("x"), rec("x", revision=1, dtmf=1))
    assert (outcome.revised, outcome.duplicates) == (2, 0)
    assert rows_of(store, keys()) == [{UK: widened([1, 1, 60_000, 10, 15, 0, 1])}] * 3


def test_revision_of_an_unknown_id_is_refused() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    unknown = rec("y", revision=1)
    moved = rec("x", customer="B", revision=1)  # another customer: not the same CDR
    outcome = store.apply(ledger, 1, unknown, moved)
    assert refused(outcome, REVISION_UNKNOWN) == [unknown, moved]
    assert outcome.updates == {}


def test_revision_of_a_version_past_the_dedup_window_is_refused() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    now = T0 + WINDOW_MS + 1
    store.apply(ledger, 1, rec("z", customer="Z", start_ms=now))
    outcome = store.apply(ledger, 2, rec("x", revision=1, start_ms=now))
    assert refused(outcome, REVISION_UNKNOWN) == [rec("x", revision=1, start_ms=now)]
    assert rows_of(store, [key(H), key(D)]) == [{UK: widened([1, 1, 60_000, 10, 15, 0, 0])}] * 2


def test_revision_corrects_only_the_buckets_still_kept() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    now_ms = MINUTE_GONE * 1000  # x's minute bucket has expired, its hour and day are kept
    outcome = store.apply(ledger, 1, rec("x", revision=1, start_ms=now_ms, customer_charge=20))
    assert outcome.revised == 1
    assert rows_of(store, [key(H), key(D)]) == [{UK: ZERO}] * 2
    assert key(M) not in store.rows
    new_minute = key(M, start=now_ms // 1000)
    assert store.rows[new_minute].rows == {UK: widened([1, 1, 60_000, 10, 20, 0, 0])}


def test_a_too_late_revision_leaves_the_counted_version() -> None:
    store, ledger = Store(), PartitionLedger(PARTITION, RETENTION, 2 * DAY_GONE * 1000)  # remembers x
    store.apply(ledger, 0, rec("x", start_ms=T0 + DAY_MS))  # its hour and day are kept ...
    store.apply(ledger, 1, rec("z", customer="Z", start_ms=DAY_GONE * 1000))
    late = rec("x", revision=1, start_ms=T0)  # ... but the revision's day has expired
    outcome = store.apply(ledger, 2, late)
    assert refused(outcome) == [late]
    assert outcome.revised == 0
    assert store.rows[key(D, start=D0 + 86_400)].rows == {UK: widened([1, 1, 60_000, 10, 15, 0, 0])}


@pytest.mark.parametrize("written", [0, 1, 3, 6])
def test_a_revision_replayed_after_a_crash_retracts_and_adds_once(written: int) -> None:
    """The revision message's bucket writes partly made (the moved-from and moved-to
    buckets, in any order), then a restart replays it, from the id store as it was written."""
    full, ledger = Store(), new_ledger()
    full.apply(ledger, 0, rec("x", customer_charge=None), rec("y"))
    crashed = Store()
    crashed.rows = {k: copy(v) for k, v in full.rows.items()}
    crashed.ids, crashed.stream_ms, crashed.offset = dict(full.ids), full.stream_ms, full.offset
    message = [rec("x", revision=1, start_ms=LATER_MS), rec("y", customer_charge=None)]
    first = full.apply(ledger, 1, *message)
    for bucket_key in list(first.updates)[:written]:
        crashed.rows[bucket_key] = copy(full.rows[bucket_key])
    if written == 6:
        crashed.ids.update(first.versions)  # the id store was written too
    replay = crashed.apply(crashed.restored(), 1, *message)
    assert crashed.snapshot() == full.snapshot()
    assert replay.refused == []
    # and once more, from a ledger that saw the replay
    crashed.apply(crashed.restored(), 1, *message)
    assert crashed.snapshot() == full.snapshot()


def test_an_old_message_replayed_after_a_later_revision_changes_nothing() -> None:
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    store.apply(ledger, 1, rec("x", revision=1, destination="US"))
    before = store.snapshot()
    outcome = store.apply(store.restored(), 0, rec("x"))
    assert (outcome.replayed, outcome.revised, outcome.updates) == (1, 0, {})
    assert store.snapshot() == before


def test_a_revision_retracts_what_its_version_counted_in_the_newer_counters() -> None:
    """NER, PDD, short calls and the SIP code move with the revision; a changed short-call
    threshold does not change what the counted version retracts."""
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x", duration_ms=4_000, effective=True, pdd_ms=2_000, sip_code=200))
    [row] = rows_of(store, keys())[0].values()
    assert row[7:11] == [1, 2_000, 1, 1] and row[sip_slot(200)] == 1  # effective, PDD, short
    ledger.short_call_ms = 1_000  # the setting changed: x was counted as short, and stays so
    store.apply(ledger, 1, rec("x", revision=1, connected=False, duration_ms=0, sip_code=503, pdd_ms=None))
    [row] = rows_of(store, keys())[0].values()
    assert row[:11] == [1, 0, 0, 10, 15, 0, 0, 0, 0, 0, 0]
    assert row[sip_slot(200)] == 0 and row[sip_slot(503)] == 1


def test_a_version_counted_before_the_newer_counters_retracts_none_of_them() -> None:
    """A stored version of ten items (written by an older worker) added nothing to NER, PDD,
    short calls or SIP codes, as the rows it went to were widened with zeros."""
    store, ledger = Store(), new_ledger()
    store.apply(ledger, 0, rec("x"))
    customer, cdr_id, offset, stream_ms, version, previous = orjson.loads(store.ids[("A", "x")])
    store.ids[("A", "x")] = orjson.dumps([customer, cdr_id, offset, stream_ms, version[:10], previous])
    for bucket in store.rows.values():  # as an older worker left them
        bucket.rows = {
            row: [*counters[:7], *[0] * (len(counters) - 7)] for row, counters in bucket.rows.items()
        }
    ledger = store.restored()
    store.apply(ledger, 1, rec("x", revision=1, sip_code=486, effective=True, pdd_ms=900))
    [row] = rows_of(store, keys())[0].values()
    assert row[:11] == [1, 1, 60_000, 10, 15, 0, 0, 1, 900, 1, 0] and row[sip_slot(486)] == 1
    assert sum(row[FIRST_SIP:]) == 1
