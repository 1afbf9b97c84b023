"""A bucket write's fields: names cut from row ids, counters cut from one text, refusals left out."""

from __future__ import annotations

import orjson

from breakout.ledger import CustomerBucket, row_id
from breakout.redis_layout import APPLIED_FIELD, encode_row_field
from streams.bucket_writes import WATCHED, BucketWrite, RowFields, each_encoded

ODD = ["plain", "a/b", "del\x7fete", 'q"uote', "back\\slash", "tab\t", "é 中", "\U0001f600", ""]


def test_each_row_s_counters_are_its_own_json() -> None:
    counters = [[1, 2, 3], [0], [2**62 + 1, 0, 7], []]
    assert each_encoded(counters) == [orjson.dumps(c) for c in counters]
    assert each_encoded([]) == []


def test_fields_cut_from_a_row_id_are_the_fields_encoded_whole() -> None:
    fields = RowFields()
    for destination in ODD:
        for provider in ("p1", "p/2"):
            row = row_id(destination, provider, "EUR")
            field, got_destination, tail = fields.of(row)
            assert field == encode_row_field(destination, provider, "EUR")
            assert got_destination == destination
            for customer in ODD:
                assert fields.customer(customer) + tail == encode_row_field(customer, provider, "EUR")


def test_each_customer_s_fields_then_each_destination_s_without_the_refused() -> None:
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    write = BucketWrite()
    write.add("c1", CustomerBucket(5, {uk: [1, 1], fr: [2, 2]}), [uk, fr])
    write.add("c2", CustomerBucket(7, {uk: [3, 3]}), [uk])
    write.delete("c3")
    [bucket] = write.encode(RowFields())
    assert bucket.customers == ["c1", "c2"]
    assert bucket.applied == [5, 7]
    assert bucket.fields == [
        [APPLIED_FIELD, 5, uk, b"[1,1]", fr, b"[2,2]"],
        [APPLIED_FIELD, 7, uk, b"[3,3]"],
    ]
    assert bucket.deleted == ["c3"]
    c1_uk, c2_uk = '["c1","p1","EUR"]', '["c2","p1","EUR"]'
    assert dict(bucket.destination_fields(set())) == {
        "UK": [c1_uk, b"[1,1]", c2_uk, b"[3,3]"],
        "FR": ['["c1","p1","EUR"]', b"[2,2]"],
    }
    # c1 refused: its fields are left out, and a destination only it wrote is not written.
    assert dict(bucket.destination_fields({0})) == {"UK": [c2_uk, b"[3,3]"]}


def test_a_bucket_of_many_customers_is_written_in_parts_each_with_its_own_destination_fields() -> None:
    uk = row_id("UK", "p1", "EUR")
    write = BucketWrite()
    count = 2 * WATCHED + 1
    for n in range(count):
        write.add(f"c{n}", CustomerBucket(n, {uk: [n]}), [uk])
    write.delete("gone")
    parts = write.encode(RowFields())
    assert [len(part.customers) for part in parts] == [WATCHED, WATCHED, 1]
    assert [part.deleted for part in parts] == [["gone"], [], []]
    assert [c for part in parts for c in part.customers] == [f"c{n}" for n in range(count)]
    last = parts[-1]
    assert last.fields == [[APPLIED_FIELD, count - 1, uk, b"[%d]" % (count - 1)]]
    assert dict(last.destination_fields(set())) == {
        "UK": [f'["c{count - 1}","p1","EUR"]', b"[%d]" % (count - 1)]
    }
