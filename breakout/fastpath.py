"""The common, well-formed CDR checked in one tight function; anything unusual goes to the full validator.

``validate_cdr`` in ``breakout.cdr`` is the contract's reference: one helper per rule, a
``Decimal`` for fractional durations, a regular expression for money, a frozen dataclass
out. That costs ~10 µs per CDR, most of the worker's ingest time. ``common_cdr`` accepts
only documents it can judge with plain ``str``/``int`` operations (exact types, money as
``"123.456"`` strings, epoch or ISO times, integer or short fractional durations) and
returns the very values ``validate_cdr`` would; for anything else (a rule broken, a rare
type, whitespace to strip) it returns ``None`` and the caller asks ``validate_cdr``, which
then accepts with the same values or refuses with its reason. So the fast path can only be
faster, never different: ``tests/unit/test_fastpath.py`` checks the two agree on tricky inputs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from breakout.cdr import (
    CONNECTED_STATUS,
    EARLIEST_MS,
    EFFECTIVE_Q850,
    EFFECTIVE_SIP,
    EFFECTIVE_STATUS,
    FUTURE_SLACK_MS,
    MAX_DIGITS,
    MAX_DTMF,
    MAX_DURATION_S,
    MAX_PDD_MS,
    MAX_REVISION,
    MAX_TEXT,
)
from breakout.money import MAX_MICROS, MICROS

# What validate_cdr returns, as a plain tuple (a frozen dataclass alone costs ~1.5 µs to build).
CDRFields = tuple[
    str,
    str,
    str,
    str,
    str | None,
    int,
    int,
    bool,
    int,
    int | None,
    str,
    int,
    int,
    bool,
    int | None,
    int | None,
]

_MISSING: Any = object()


def common_cdr(document: Any, *, default_currency: str, now_ms: int) -> CDRFields | None:
    """``(id, customer_id, provider_id, dst, destination, start_ms, duration_ms, connected,
    provider_charge, customer_charge, currency, dtmf, revision, effective, pdd_ms, sip_code)`` as
    ``validate_cdr`` would return them, or ``None`` when the document is not the common well-formed case."""
    if type(document) is not dict:
        return None
    get = document.get
    cdr_id = get("id")
    customer_id = get("customer_id")
    provider_id = get("provider_id", "")
    destination = get("destination", "")
    if not (
        type(cdr_id) is str
        and type(customer_id) is str
        and type(provider_id) is str
        and type(destination) is str
        and len(cdr_id) <= MAX_TEXT
        and len(customer_id) <= MAX_TEXT
        and len(provider_id) <= MAX_TEXT
        and len(destination) <= MAX_TEXT
        and cdr_id.strip()
        and customer_id.strip()
    ):
        return None
    latest_ms = now_ms + FUTURE_SLACK_MS
    start_ms = _time_ms(get("start_time"), latest_ms)
    if start_ms is None:
        return None
    for optional in ("answer_time", "end_time"):
        value = get(optional)
        if value is not None and _time_ms(value, latest_ms) is None:
            return None
    duration_ms = _duration_ms(get("duration"))
    if duration_ms is None:
        return None
    status = get("status")
    if status is None:
        connected = duration_ms > 0
    elif type(status) is str and status.strip():
        status = status.strip().lower()
        connected = status == CONNECTED_STATUS
    else:
        return None
    sip_code = get("sip_code")
    q850_cause = get("q850_cause")
    pdd_ms = get("pdd_ms")
    if (
        (sip_code is not None and (type(sip_code) is not int or not 100 <= sip_code <= 699))
        or (q850_cause is not None and (type(q850_cause) is not int or not 0 <= q850_cause <= 127))
        or (pdd_ms is not None and (type(pdd_ms) is not int or not 0 <= pdd_ms <= MAX_PDD_MS))
    ):
        return None
    if sip_code is not None:
        effective = 200 <= sip_code < 300 or sip_code in EFFECTIVE_SIP
    elif q850_cause is not None:
        effective = q850_cause in EFFECTIVE_Q850
    else:
        effective = connected if status is None else status in EFFECTIVE_STATUS
    provider_charge = _micros(get("provider_charge"))
    if provider_charge is None:
        return None
    customer_text = get("customer_charge", _MISSING)
    customer_charge = None  # null: rating pending
    if customer_text is not None:
        customer_charge = _micros(customer_text)  # absent (_MISSING) is refused by validate_cdr
        if customer_charge is None:
            return None
    dst = get("dst")
    if type(dst) is not str:
        return None
    digits = dst[1:] if dst[:1] == "+" else dst[2:] if dst[:2] == "00" else dst
    if not (digits.isdigit() and digits.isascii() and len(digits) <= MAX_DIGITS):
        return None
    currency = get("currency")
    if currency is None:
        currency = default_currency
    elif type(currency) is str and len(currency) == 3 and currency.isalpha() and currency.isascii():
        currency = currency.upper()
    else:
        return None
    dtmf = get("dtmf")
    if dtmf is None:
        dtmf = 0
    elif type(dtmf) is not int or not 0 <= dtmf <= MAX_DTMF:
        return None
    revision = get("revision")
    if revision is None:
        revision = 0
    elif type(revision) is not int or not 0 <= revision <= MAX_REVISION:
        return None
    return (
        cdr_id,
        customer_id,
        provider_id,
        digits,
        destination.strip() or None,
        start_ms,
        duration_ms,
        connected,
        provider_charge,
        customer_charge,
        currency,
        dtmf,
        revision,
        effective,
        pdd_ms,
        sip_code,
    )


def _time_ms(value: Any, latest_ms: int) -> int | None:
    """Epoch seconds/milliseconds or ISO 8601 with an offset, as validate_cdr reads them."""
    kind = type(value)
    if kind is int or kind is float:
        # NaN and the infinities fail both comparisons, as do times out of range.
        if not -1e300 < value < 1e300:
            return None
        milliseconds: int = round(value) if value >= 1e11 else round(value * 1000)
    elif kind is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        milliseconds = round(moment.timestamp() * 1000)
    else:
        return None
    if EARLIEST_MS <= milliseconds <= latest_ms:
        return milliseconds
    return None


def _duration_ms(value: Any) -> int | None:
    """Whole seconds, or a float with at most three decimals (its shortest repr, as validate_cdr)."""
    kind = type(value)
    if kind is int:
        seconds: int = value
        return seconds * 1000 if 0 <= seconds <= MAX_DURATION_S else None
    if kind is float and 0 <= value <= MAX_DURATION_S:
        milliseconds: int = round(value * 1000)
        # Below 2^53 / 1000 the double nearest k/1000 is unique, so this holds exactly when
        # the shortest repr of ``value`` has at most three decimals, and then it is k/1000.
        if milliseconds / 1000 == value:
            return milliseconds
    return None


def _micros(value: Any) -> int | None:
    """A plain ``"123.456789"`` money string as micro-units; ``None`` for anything else."""
    if type(value) is not str or not value.isascii():
        return None
    whole, dot, fraction = value.partition(".")
    if not (whole.isdigit() and len(whole) <= 7) or (dot and not (fraction.isdigit() and len(fraction) <= 6)):
        return None
    micros = int(whole) * MICROS + (int(fraction.ljust(6, "0")) if fraction else 0)
    return micros if micros <= MAX_MICROS else None
