"""The JSON Schema in breakout/schemas and the validator agree on what a CDR is."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from breakout.cdr import validate_cdr
from breakout.errors import InvalidCDR

NOW_MS = 1_795_600_000_000
SCHEMA = json.loads(resources.files("breakout.schemas").joinpath("cdr-v1.json").read_text())
BASE: dict[str, Any] = {
    "id": "c-1",
    "customer_id": "acme",
    "dst": "+447700900123",
    "start_time": "2026-11-25T10:00:00+00:00",
    "duration": 12.5,
    "provider_charge": "0.010000",
    "customer_charge": None,
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"start_time": 1795600000},
        {"start_time": 1795600000123, "currency": "eur", "dtmf": 3, "status": "BUSY"},
        {"provider_charge": 2, "customer_charge": "1.5", "provider_id": None, "extra": [1]},
        {"dst": "0044207", "destination": "UK"},
        {"id": ""},
        {"customer_id": None},
        {"dst": "+44 77"},
        {"duration": -1},
        {"provider_charge": "0.1234567"},
        {"provider_charge": "-1"},
        {"customer_charge": 2_000_000},
        {"currency": "EURO"},
        {"dtmf": 1.5},
        {"status": ""},
        {"start_time": "25/11/2026"},
        # revision: absent (BASE), null, or an integer from 0 to 2**31 - 1 (1.0: below)
        {"revision": None},
        {"revision": 0},
        {"revision": 5},
        {"revision": 2**31 - 1},
        {"revision": 2**31},
        {"revision": -1},
        {"revision": "1"},
        {"revision": True},
        # the NOC fields: absent, null, or integers in range
        {"sip_code": 503, "q850_cause": 34, "pdd_ms": 2500},
        {"sip_code": None, "q850_cause": None, "pdd_ms": None},
        {"sip_code": 99},
        {"sip_code": 700},
        {"sip_code": "503"},
        {"q850_cause": 128},
        {"q850_cause": -1},
        {"pdd_ms": -1},
        {"pdd_ms": 600_001},
        {"pdd_ms": "2500"},
    ],
)
def test_schema_and_validator_agree(changes: dict[str, Any]) -> None:
    document = {**BASE, **changes}
    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
    try:
        validate_cdr(document, default_currency="USD", now_ms=NOW_MS)
        validator_ok = True
    except InvalidCDR:
        validator_ok = False
    assert schema_ok == validator_ok


@pytest.mark.parametrize("field", ["dtmf", "revision", "sip_code", "q850_cause", "pdd_ms"])
def test_an_integer_written_with_a_fraction_is_a_rule_the_schema_cannot_state(field: str) -> None:
    """JSON Schema counts 1.0 as an integer; the contract wants 1, and the schema says so in words."""
    document = {**BASE, field: 100.0 if field == "sip_code" else 1.0}
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
    with pytest.raises(InvalidCDR) as info:
        validate_cdr(document, default_currency="USD", now_ms=NOW_MS)
    assert info.value.reason == "bad_field"
    assert (
        "dtmf, revision, sip_code, q850_cause and pdd_ms written as integers: 1, not 1.0"
        in SCHEMA["description"]
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
