"""The CDR event contract (v1): decoding a Kafka message and validating each CDR in it.

Pure functions, no I/O. ``docs/cdr-contract.md`` is the human version of the rules
and ``breakout/schemas/cdr-v1.json`` the JSON Schema; ``validate_cdr`` is the one
that decides. A message is one CDR object or a batch (an array of CDR objects);
each CDR is judged alone, so one bad CDR never rejects its valid siblings.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from breakout.errors import InvalidCDR
from breakout.money import MoneyError, parse_micros

EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything earlier is a broken clock
FUTURE_SLACK_MS = 86_400_000  # one day ahead of now is the most a clock may drift
MAX_TEXT = 256
MAX_DIGITS = 32
MAX_DURATION_S = 7 * 86400  # a week-long call attempt is a broken switch clock
MAX_DTMF = 1_000_000
MAX_REVISION = 2**31 - 1
MAX_PDD_MS = 600_000  # ten minutes of ringing is a broken timer, not a slow network
CONNECTED_STATUS = "answered"
# E.425 "effective" outcomes (answered, or ended by the callee: busy, no answer, rejected),
# by the first of these the CDR carries: its final SIP code (RFC 6076's SEER set, plus 487:
# the caller hung up while it rang), its Q.850 cause, its status. See docs/cdr-contract.md.
EFFECTIVE_SIP = frozenset({480, 486, 487, 600, 603})  # and every 2xx
EFFECTIVE_Q850 = frozenset({16, 17, 18, 19, 21})
EFFECTIVE_STATUS = frozenset({"answered", "busy", "no_answer", "cancelled", "rejected"})


@dataclass(frozen=True, slots=True)
class CDR:
    """A validated call attempt. Money in micro-units, times and durations in milliseconds."""

    id: str
    customer_id: str
    provider_id: str
    dst: str
    destination: str | None
    start_ms: int
    duration_ms: int
    connected: bool
    provider_charge: int
    customer_charge: int | None
    currency: str
    dtmf: int
    revision: int
    sip_code: int | None = None
    q850_cause: int | None = None
    pdd_ms: int | None = None
    effective: bool = False


def is_effective(connected: bool, status: str | None, sip_code: int | None, q850_cause: int | None) -> bool:
    """Whether an attempt counts towards NER (ITU-T E.425): answered, or ended by the callee.

    ``status`` is lower-cased and stripped (None: absent, when ``connected`` decides).
    """
    if sip_code is not None:
        return 200 <= sip_code < 300 or sip_code in EFFECTIVE_SIP
    if q850_cause is not None:
        return q850_cause in EFFECTIVE_Q850
    if status is None:
        return connected
    return status in EFFECTIVE_STATUS


def decode_message(value: bytes | None) -> list[Any]:
    """The CDR documents in one message value: ``[obj]`` for an object, the array for a batch.

    Raises ``InvalidCDR`` for a value that is not JSON, or is JSON of another shape.
    """
    if value is None:
        raise InvalidCDR("bad_json", "message has no value")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidCDR("bad_json", f"not JSON: {exc}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        if not document:
            raise InvalidCDR("bad_json", "empty batch")
        return document
    raise InvalidCDR("bad_json", f"expected a CDR object or an array of them, got {type(document).__name__}")


def validate_cdr(document: Any, *, default_currency: str, now_ms: int) -> CDR:
    """One CDR document checked against every rule of the contract, or ``InvalidCDR``."""
    if not isinstance(document, dict):
        raise InvalidCDR("not_an_object", f"expected a CDR object, got {type(document).__name__}")
    get = document.get
    cdr_id = _text(document, "id", required=True)
    customer_id = _text(document, "customer_id", required=True)
    start_ms = _time_ms(document, "start_time", now_ms, required=True)
    assert start_ms is not None
    for optional_time in ("answer_time", "end_time"):
        _time_ms(document, optional_time, now_ms, required=False)
    duration_ms = _duration_ms(get("duration", _MISSING))
    status = get("status")
    if status is None:
        connected = duration_ms > 0
    elif isinstance(status, str) and status.strip():
        status = status.strip().lower()
        connected = status == CONNECTED_STATUS
    else:
        raise InvalidCDR("bad_field", f"status: expected a non-empty string, got {_shown(status)}")
    sip_code = _whole(get("sip_code"), "sip_code", 100, 699)
    q850_cause = _whole(get("q850_cause"), "q850_cause", 0, 127)
    customer_charge = get("customer_charge", _MISSING)
    if customer_charge is _MISSING:
        raise InvalidCDR("missing_field", "customer_charge is required (null means rating pending)")
    return CDR(
        id=cdr_id,
        customer_id=customer_id,
        provider_id=_text(document, "provider_id", required=False),
        dst=normalize_number(get("dst", _MISSING)),
        destination=_text(document, "destination", required=False).strip() or None,
        start_ms=start_ms,
        duration_ms=duration_ms,
        connected=connected,
        provider_charge=_money(document, "provider_charge"),
        customer_charge=None if customer_charge is None else _money(document, "customer_charge"),
        currency=_currency(get("currency"), default_currency),
        dtmf=_dtmf(get("dtmf")),
        revision=_revision(get("revision")),
        sip_code=sip_code,
        q850_cause=q850_cause,
        pdd_ms=_whole(get("pdd_ms"), "pdd_ms", 0, MAX_PDD_MS),
        effective=is_effective(connected, status, sip_code, q850_cause),
    )


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80


def _shown(value: Any) -> str:
    """A refused value as a detail quotes it: its repr, cut short and a few levels deep.

    A detail names the problem for a person and need not copy a megabyte; and a value
    nested a thousand levels deep has no plain repr at all (``RecursionError``), which
    would turn a bad CDR into a crash.
    """
    return _SHORT_REPR.repr(value)


def normalize_number(value: Any) -> str:
    """Dialed digits without a leading ``+`` or ``00`` international prefix."""
    if value is _MISSING or value is None:
        raise InvalidCDR("missing_field", "dst is required")
    if not isinstance(value, str):
        raise InvalidCDR("bad_field", f"dst: expected a string of digits, got {_shown(value)}")
    digits = value.strip()
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_DIGITS:
        raise InvalidCDR("bad_field", f"dst: expected up to {MAX_DIGITS} digits, got {_shown(value)}")
    return digits


def _text(document: dict[str, Any], field: str, *, required: bool) -> str:
    value = document.get(field)
    if value is None:
        if required:
            raise InvalidCDR("missing_field", f"{field} is required")
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        raise InvalidCDR(
            "bad_field", f"{field}: expected a non-empty string of at most {MAX_TEXT} characters"
        )
    return value


def _time_ms(document: dict[str, Any], field: str, now_ms: int, *, required: bool) -> int | None:
    value = document.get(field)
    if value is None:
        if required:
            raise InvalidCDR("missing_field", f"{field} is required")
        return None
    if isinstance(value, bool):
        raise InvalidCDR(
            "bad_time", f"{field}: expected ISO 8601 or epoch seconds/milliseconds, got {_shown(value)}"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidCDR("bad_time", f"{field}: must be finite, got {_shown(value)}")
        if not -1e15 < value < 1e15:  # past year 30000 either way; also keeps round() finite
            raise InvalidCDR("bad_time", f"{field}: out of range, got {_shown(value)}")
        # Epoch milliseconds from 2000 on exceed 1e11; epoch seconds stay below it until 5138.
        milliseconds = round(value) if value >= 1e11 else round(value * 1000)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidCDR("bad_time", f"{field}: not ISO 8601: {_shown(value)}") from None
        if moment.tzinfo is None:
            raise InvalidCDR("bad_time", f"{field}: ISO 8601 time needs a UTC offset: {_shown(value)}")
        milliseconds = round(moment.timestamp() * 1000)
    else:
        raise InvalidCDR(
            "bad_time", f"{field}: expected ISO 8601 or epoch seconds/milliseconds, got {_shown(value)}"
        )
    if milliseconds < EARLIEST_MS:
        raise InvalidCDR("bad_time", f"{field}: before 2000-01-01: {_shown(value)}")
    if milliseconds > now_ms + FUTURE_SLACK_MS:
        raise InvalidCDR("bad_time", f"{field}: more than a day in the future: {_shown(value)}")
    return milliseconds


def _duration_ms(value: Any) -> int:
    if value is _MISSING or value is None:
        raise InvalidCDR("missing_field", "duration is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCDR("bad_field", f"duration: expected a number of seconds, got {_shown(value)}")
    if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S:
        raise InvalidCDR(
            "bad_field", f"duration: expected 0 to {MAX_DURATION_S} seconds, got {_shown(value)}"
        )
    if isinstance(value, int):
        return value * 1000
    # The float's shortest repr is the text the producer wrote: judge its decimals exactly.
    exact = Decimal(repr(value)).normalize()
    if exact.as_tuple().exponent < -3:  # type: ignore[operator]
        raise InvalidCDR("bad_field", f"duration: at most 3 decimal places, got {_shown(value)}")
    return int(exact * 1000)


def _money(document: dict[str, Any], field: str) -> int:
    value = document.get(field)
    if value is None:
        raise InvalidCDR("missing_field", f"{field} is required")
    try:
        return parse_micros(value)
    except MoneyError as exc:
        raise InvalidCDR("bad_money", f"{field}: {exc}") from None


def _currency(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha() or not value.isascii():
        raise InvalidCDR("bad_field", f"currency: expected an ISO 4217 code like USD, got {_shown(value)}")
    return value.upper()


def _dtmf(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DTMF:
        raise InvalidCDR(
            "bad_field", f"dtmf: expected a whole number from 0 to {MAX_DTMF}, got {_shown(value)}"
        )
    return value


def _whole(value: Any, field: str, low: int, high: int) -> int | None:
    """An optional whole number in ``[low, high]``: absent (or null) is unknown, never guessed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidCDR(
            "bad_field", f"{field}: expected a whole number from {low} to {high}, got {_shown(value)}"
        )
    return value


def _revision(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REVISION:
        raise InvalidCDR(
            "bad_field", f"revision: expected a whole number from 0 to {MAX_REVISION}, got {_shown(value)}"
        )
    return value
