"""The read endpoints' parameter models: what the core's parser receives from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.params import RangeParams, SnapshotParams


def test_values_are_the_given_parameters_by_their_query_names() -> None:
    params = SnapshotParams.model_validate({"from": "2026-11-01", "customer": ["a", "b"], "limit": "5"})
    assert params.values() == {"from": ["2026-11-01"], "customer": ["a", "b"], "limit": ["5"]}
    assert RangeParams().values() == {}


def test_an_unknown_name_is_refused_with_the_names_the_endpoint_takes() -> None:
    with pytest.raises(ValidationError, match="unknown parameter 'limit'; this endpoint takes from, to, tz,"):
        RangeParams.model_validate({"limit": "5"})
    assert SnapshotParams.names()[-5:] == ["group_by", "sort", "limit", "offset", "format"]
