"""Read-API parameters: validation, defaults and the customer scope."""

from __future__ import annotations

from datetime import date

import pytest

from breakout.auth import ADMIN, Role
from breakout.errors import QueryError
from breakout.query import HIDDEN_FROM_CUSTOMERS, AccessDenied, parse_range_query, parse_snapshot_query
from breakout.snapshot import COSTS

TODAY = date(2026, 11, 25)
ACME = Role("acme")


def test_defaults() -> None:
    query = parse_snapshot_query({}, ADMIN, TODAY)
    assert query.group_by == ("customer", "destination")
    assert (query.sort, query.limit, query.offset, query.format) == (None, 1000, 0, "json")
    assert query.range.tz.key == "UTC" and query.range.end - query.range.start == 86400


def test_group_by_keeps_the_order_asked_and_sort_may_descend() -> None:
    query = parse_snapshot_query({"group_by": ["destination,provider"], "sort": ["-asr"]}, ADMIN, TODAY)
    assert query.group_by == ("destination", "provider") and (query.sort, query.descending) == ("asr", True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": ["2026-11-01", "2026-11-02"]}, "once"),
        ({"group_by": ["customer,customer"]}, "twice"),
        ({"group_by": ["country"]}, "group_by"),
        ({"sort": ["provider"]}, "not a column"),
        ({"sort": ["-"]}, "not a column"),
        ({"limit": ["10001"]}, "limit"),
        ({"limit": ["-1"]}, "limit"),
        ({"offset": ["x"]}, "offset"),
        ({"format": ["pdf"]}, "json or csv"),
    ],
)
def test_refusals(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_snapshot_query(params, ADMIN, TODAY)


def test_repeatable_filters() -> None:
    query = parse_range_query({"destination": ["France", "UK, Mobile", ""], "customer": ["a"]}, ADMIN, TODAY)
    assert query.filters.destinations == {"France", "UK, Mobile"} and query.filters.customers == {"a"}


def test_a_customer_key_is_forced_to_its_account() -> None:
    assert parse_range_query({}, ACME, TODAY).filters.customers == {"acme"}
    assert parse_range_query({"customer": ["acme"]}, ACME, TODAY).filters.customers == {"acme"}


@pytest.mark.parametrize(
    "params",
    [
        {"customer": ["beta"]},
        {"customer": ["acme", "beta"]},
        {"provider": ["p1"]},
        {"group_by": ["provider"]},
    ],
)
def test_a_customer_key_cannot_ask_for_more(params: dict[str, list[str]]) -> None:
    with pytest.raises(AccessDenied):
        parse_snapshot_query(params, ACME, TODAY)


@pytest.mark.parametrize("column", sorted(COSTS))
@pytest.mark.parametrize("descending", ["", "-"])
def test_a_customer_key_cannot_sort_by_what_it_does_not_see(column: str, descending: str) -> None:
    """Blanked values sorted would still tell their order: refused, naming the column."""
    with pytest.raises(AccessDenied, match=f"sort: '{column}' is for admin keys"):
        parse_snapshot_query({"sort": [descending + column]}, ACME, TODAY)
    assert parse_snapshot_query({"sort": [descending + column]}, ADMIN, TODAY).sort == column


def test_a_customer_key_sorts_by_every_column_it_sees() -> None:
    for column in ("customer", "destination", "currency", "attempts", "asr", "customer_charge", "dtmf_pct"):
        assert parse_snapshot_query({"sort": [f"-{column}"]}, ACME, TODAY).sort == column


def test_everything_hidden_from_customer_keys_is_refused_where_it_can_be_named() -> None:
    """Every parameter naming a column: group_by, sort, and the provider filter."""
    assert {"provider", *COSTS} == HIDDEN_FROM_CUSTOMERS
    with pytest.raises(AccessDenied, match="group_by: 'provider'"):
        parse_snapshot_query({"group_by": ["destination,provider"]}, ACME, TODAY)
    with pytest.raises(AccessDenied, match="provider detail"):
        parse_range_query({"provider": ["p1"]}, ACME, TODAY)
