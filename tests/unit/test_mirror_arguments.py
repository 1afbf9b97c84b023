"""The mirror's script arguments: field names cut from row ids, counters cut from one text."""

from __future__ import annotations

import orjson

from breakout.ledger import CustomerBucket, row_id
from breakout.redis_layout import APPLIED_FIELD, encode_row_field
from streams.mirror import RowFields, _BucketWrite, _each_encoded

ODD = ["plain", "a/b", "del\x7fete", 'q"uote', "back\\slash", "tab\t", "é 中", "\U0001f600", ""]


def test_each_row_s_counters_are_its_own_json() -> None:
    counters = [[1, 2, 3], [0], [2**62 + 1, 0, 7], []]
    assert _each_encoded(counters) == [orjson.dumps(c) for c in counters]
    assert _each_encoded([]) == []


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


def test_arguments_list_each_customer_then_each_destination() -> None:
    uk, fr = row_id("UK", "p1", "EUR"), row_id("FR", "p1", "EUR")
    write = _BucketWrite()
    fields = RowFields()
    write.add("c1", CustomerBucket(5, {uk: [1, 1], fr: [2, 2]}), [uk, fr])
    write.add("c2", CustomerBucket(7, {uk: [3, 3]}), [uk])
    assert write.arguments(fields) == [
        2,
        *("c1", 3, APPLIED_FIELD, 5, uk, b"[1,1]", fr, b"[2,2]"),
        *("c2", 2, APPLIED_FIELD, 7, uk, b"[3,3]"),
        2,
        *("UK", 2, '["c1","p1","EUR"]', b"[1,1]", '["c2","p1","EUR"]', b"[3,3]"),
        *("FR", 1, '["c1","p1","EUR"]', b"[2,2]"),
    ]
