"""A generated CDR dataset with the totals it must produce, computed independently.

Nothing here imports the pipeline's arithmetic: expected rows are summed with
``Decimal`` from the raw CDR dicts, destinations found by a brute-force scan of the
dial-code table, so a bug in the pipeline cannot hide in its own expectation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

GRANULARITY_SECONDS = {"m": 60, "h": 3600, "d": 86400}
RowKey = tuple[str, int, str, str, str, str]  # granularity, start, customer, destination, provider, currency


def dial_code_table(count: int) -> dict[str, str]:
    """``count`` destinations, some nested (``44`` and ``447``) so the longest prefix matters."""
    table: dict[str, str] = {}
    for n in range(count):
        country = str(200 + n * 7)
        table[country] = f"Country {n}"
        if n % 3 == 0:
            table[country + "7"] = f"Country {n} - Mobile"
    return table


def expected_destination(dst: str, table: dict[str, str]) -> str:
    digits = dst.removeprefix("+")
    digits = digits.removeprefix("00") if not dst.startswith("+") else digits
    matches = [prefix for prefix in table if digits.startswith(prefix)]
    return table[max(matches, key=len)] if matches else "Unknown"


@dataclass
class Dataset:
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, value)
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> first CDR published
    invalid: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, payload as sent)
    duplicates: int = 0


def _cdr(rng: random.Random, n: int, start: float, customers: int, table: dict[str, str]) -> dict[str, Any]:
    prefix = rng.choice(sorted(table))
    status = rng.choice(["answered", "answered", "failed", "busy", "no_answer", None])
    duration: float = rng.choice([0, 0, rng.randint(1, 600), round(rng.uniform(1, 90), 3)])
    cdr: dict[str, Any] = {
        "id": f"cdr-{n}",
        "customer_id": f"cust-{rng.randrange(customers):02d}",
        "provider_id": f"prov-{rng.randrange(4)}",
        "dst": rng.choice(["+", "00", ""]) + prefix + "".join(rng.choices("0123456789", k=7)),
        "start_time": rng.choice([round(start, 3), int(start * 1000)]),
        "duration": duration,
        "provider_charge": rng.choice([f"{rng.randint(0, 999999) / 1e6:.6f}", rng.randint(0, 3)]),
        "customer_charge": rng.choice([f"{rng.randint(0, 2_000_000) / 1e6:.6f}", None, "1.5"]),
        "currency": rng.choice(["USD", "eur"]),
        "dtmf": rng.choice([0, 0, 2]),
    }
    if status is not None:
        cdr["status"] = status
    if rng.random() < 0.1:
        cdr["destination"] = "Platform Named Route"
    _noc_fields(random.Random(n), cdr)
    return cdr


def _noc_fields(rng: random.Random, cdr: dict[str, Any]) -> None:
    """The optional NOC fields, drawn from their own generator so the rest of the dataset is
    the one every test was written against: codes in and out of the catalogue, or none."""
    roll = rng.random()
    if roll < 0.6:
        cdr["sip_code"] = rng.choice([200, 200, 486, 503, 404, 487, 480, 603, 505, 181, 302, 699])
    elif roll < 0.75:
        cdr["q850_cause"] = rng.choice([16, 17, 19, 34, 41, 127])
    if rng.random() < 0.7:
        cdr["pdd_ms"] = rng.choice([0, rng.randint(1, 15_000)])


# Independent of the pipeline: the contract's catalogue, E.425 sets and short-call threshold.
SIP_CATALOGUE = (200, 403, 404, 408, 480, 484, 486, 487, 488, 500, 502, 503, 504, 603)
SHORT_CALL_MS = 6_000


def effective(cdr: dict[str, Any]) -> bool:
    """E.425 as docs/cdr-contract.md states it."""
    if cdr.get("sip_code") is not None:
        code = cdr["sip_code"]
        return 200 <= code < 300 or code in (480, 486, 487, 600, 603)
    if cdr.get("q850_cause") is not None:
        return cdr["q850_cause"] in (16, 17, 18, 19, 21)
    status = cdr.get("status")
    if status is None:
        return cdr["duration"] > 0
    return status.strip().lower() in ("answered", "busy", "no_answer", "cancelled", "rejected")


def sip_label(code: int | None) -> str:
    if code is None:
        return "none"
    return str(code) if code in SIP_CATALOGUE else f"{code // 100}xx"


SIP_LABELS = (*(str(code) for code in SIP_CATALOGUE), *(f"{c}xx" for c in range(1, 7)))


INVALID_KINDS: list[tuple[str, dict[str, Any] | bytes]] = [
    ("bad_json", b'{"id": "x", "duration": NaN}'),
    ("bad_json", b"not json at all"),
    ("missing_field", {"customer_id": None}),
    ("bad_field", {"duration": -5}),
    ("bad_money", {"provider_charge": "0.1234567"}),
    ("bad_money", {"customer_charge": "-1.00"}),
    ("bad_time", {"start_time": "2026-01-01T00:00:00"}),
    ("bad_time", {"start_time": 4102444800}),
    ("bad_field", {"dtmf": "two"}),
    ("bad_field", {"dst": "+44 abc"}),
]


def generate(
    seed: int, total: int, end_time: float, customers: int, table: dict[str, str], first_id: int = 0
) -> Dataset:
    """About ``total`` CDRs over the two hours before ``end_time``: single and batch messages,
    5 % re-published duplicates (some unkeyed, so on another partition), 2 % invalid. Ids are
    numbered from ``first_id``: datasets counted together need ranges of their own."""
    rng = random.Random(seed)
    data = Dataset()
    start = end_time - 7200
    pending: list[dict[str, Any] | bytes] = []
    published: list[dict[str, Any]] = []
    for n in range(total):
        roll = rng.random()
        if roll < 0.02:
            reason, shape = INVALID_KINDS[n % len(INVALID_KINDS)]
            if isinstance(shape, bytes):
                data.invalid.append((reason, shape))
                data.messages.append((None, shape))
                continue
            bad = _cdr(rng, first_id + n, start + n * 7200 / total, customers, table)
            bad.update(shape, id=f"bad-{first_id + n}")
            pending.append(bad)
            data.invalid.append((reason, orjson.dumps(bad)))
            continue
        if roll < 0.07 and published:
            again = dict(rng.choice(published))
            data.duplicates += 1
            pending.append(again)
            continue
        cdr = _cdr(rng, first_id + n, start + n * 7200 / total, customers, table)
        data.valid[cdr["id"]] = cdr
        published.append(cdr)
        pending.append(cdr)
        if len(pending) >= rng.choice([1, 1, 1, 5, 20]):
            _flush(rng, data, pending)
    _flush(rng, data, pending)
    return data


def _flush(rng: random.Random, data: Dataset, pending: list[dict[str, Any] | bytes]) -> None:
    if not pending:
        return
    documents = [d for d in pending if isinstance(d, dict)]
    pending.clear()
    value = orjson.dumps(documents[0] if len(documents) == 1 else documents)
    key = None if rng.random() < 0.2 else str(documents[0].get("customer_id", "")).encode() or None
    data.messages.append((key, value))


def late(cdrs: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """Copies of ``cdrs`` with new ids, ``seconds`` earlier."""
    moved = []
    for cdr in cdrs:
        copy = dict(cdr, id=f"late-{int(seconds)}-{cdr['id']}")
        start = cdr["start_time"]
        copy["start_time"] = start - seconds * (1000 if start > 1e11 else 1)
        moved.append(copy)
    return moved


def micros(value: Any) -> int:
    return int(Decimal(str(value)) * 1_000_000)


def expected_rows(
    cdrs: list[dict[str, Any]], table: dict[str, str], minute_cutoff: float | None = None
) -> dict[RowKey, list[int]]:
    """[attempts, connected, duration_ms, provider_charge, customer_charge, pending, dtmf,
    effective, pdd_ms, pdd_calls, short_calls, *one per SIP label] per row.

    CDRs that start before ``minute_cutoff`` (epoch seconds) have no minute rows: those
    buckets were past retention when they arrived.
    """
    rows: defaultdict[RowKey, list[int]] = defaultdict(lambda: [0] * (11 + len(SIP_LABELS)))
    for cdr in cdrs:
        start = cdr["start_time"] / (1000 if cdr["start_time"] > 1e11 else 1)
        status = cdr.get("status")
        connected = status == "answered" if status is not None else cdr["duration"] > 0
        pending = cdr["customer_charge"] is None
        destination = cdr.get("destination") or expected_destination(cdr["dst"], table)
        for granularity, size in GRANULARITY_SECONDS.items():
            if granularity == "m" and minute_cutoff is not None and start < minute_cutoff:
                continue
            bucket = int(start // size * size)
            key = (
                granularity,
                bucket,
                cdr["customer_id"],
                destination,
                cdr["provider_id"],
                cdr["currency"].upper(),
            )
            row = rows[key]
            row[0] += 1
            row[1] += connected
            row[2] += int(Decimal(str(cdr["duration"])) * 1000) if connected else 0
            row[3] += 0 if pending else micros(cdr["provider_charge"])
            row[4] += 0 if pending else micros(cdr["customer_charge"])
            row[5] += pending
            row[6] += cdr["dtmf"] > 0
            row[7] += effective(cdr)
            row[8] += cdr.get("pdd_ms") or 0
            row[9] += cdr.get("pdd_ms") is not None
            row[10] += connected and Decimal(str(cdr["duration"])) * 1000 < SHORT_CALL_MS
            label = sip_label(cdr.get("sip_code"))
            if label != "none":
                row[11 + SIP_LABELS.index(label)] += 1
    return dict(rows)


def _pct(numerator: Decimal, denominator: Decimal) -> str | None:
    if denominator == 0:
        return None
    value = (Decimal(100) * numerator / denominator).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return str(value.copy_abs() if value == 0 else value)  # a tiny loss shows as 0.00, as the API writes it


def _columns(cdrs: list[dict[str, Any]], currency: str | None) -> dict[str, Any]:
    """A report row's columns from its CDRs, by the issue's definitions, in Decimal."""
    attempts = len(cdrs)
    connected = [c for c in cdrs if (c["status"] == "answered" if c.get("status") else c["duration"] > 0)]
    rated = [c for c in cdrs if c["customer_charge"] is not None]
    seconds = sum((Decimal(str(c["duration"])) for c in connected), Decimal(0))
    provider = sum((Decimal(str(c["provider_charge"])) for c in rated), Decimal(0))
    customer = sum((Decimal(str(c["customer_charge"])) for c in rated), Decimal(0))
    dtmf = sum(1 for c in cdrs if c["dtmf"] > 0)
    short = [c for c in connected if Decimal(str(c["duration"])) * 1000 < SHORT_CALL_MS]
    whole = int(seconds.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    row: dict[str, Any] = {
        "currency": currency,
        "attempts": attempts,
        "connected": len(connected),
        "asr": _pct(Decimal(len(connected)), Decimal(attempts)),
        "acd": str((seconds / len(connected)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
        if connected
        else None,
        "duration": str(seconds.quantize(Decimal("0.001"))),
        "duration_hms": f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}",
        "pending": attempts - len(rated),
        "dtmf": dtmf,
        "dtmf_pct": _pct(Decimal(dtmf), Decimal(attempts)),
        "ner": _pct(Decimal(sum(1 for c in cdrs if effective(c))), Decimal(attempts)),
        "pdd": _seconds([c["pdd_ms"] for c in cdrs if c.get("pdd_ms") is not None]),
        "short_calls": len(short),
        "short_pct": _pct(Decimal(len(short)), Decimal(len(connected))),
        "sip_codes": _codes(cdrs),
    }
    money = currency is not None
    row["provider_charge"] = f"{provider:.6f}" if money else None
    row["customer_charge"] = f"{customer:.6f}" if money else None
    row["profit"] = f"{customer - provider:.6f}" if money else None
    row["profit_pct"] = _pct(customer - provider, customer) if money else None
    return row


def _seconds(pdds: list[int]) -> str | None:
    if not pdds:
        return None
    return str((Decimal(sum(pdds)) / 1000 / len(pdds)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _codes(cdrs: list[dict[str, Any]]) -> dict[str, int]:
    counts: defaultdict[str, int] = defaultdict(int)
    for cdr in cdrs:
        counts[sip_label(cdr.get("sip_code"))] += 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def start_seconds(cdr: dict[str, Any]) -> float:
    start: float = cdr["start_time"]
    return start / 1000 if start > 1e11 else start


def expected_report(
    cdrs: list[dict[str, Any]],
    table: dict[str, str],
    start: float,
    end: float,
    group_by: tuple[str, ...],
    admit: Callable[[dict[str, Any], str], bool] = lambda cdr, destination: True,
) -> tuple[dict[tuple[str, ...], dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Rows keyed by (group values…, currency), the totals and the per-currency totals that
    ``GET /v1/breakout`` must return for CDRs starting in ``[start, end)``."""
    groups: defaultdict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for cdr in cdrs:
        destination = cdr.get("destination") or expected_destination(cdr["dst"], table)
        if not start <= start_seconds(cdr) < end or not admit(cdr, destination):
            continue
        values = {"customer": cdr["customer_id"], "destination": destination, "provider": cdr["provider_id"]}
        groups[(*(values[name] for name in group_by), cdr["currency"].upper())].append(cdr)
    rows = {}
    for key, members in groups.items():
        row = dict(zip(group_by, key, strict=False))
        row.update(_columns(members, key[-1]))
        rows[key] = row
    by_currency: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, members in groups.items():
        by_currency[key[-1]].extend(members)
    everything = [cdr for members in groups.values() for cdr in members]
    totals = _columns(everything, next(iter(by_currency)) if len(by_currency) == 1 else None)
    per_currency = [_columns(by_currency[currency], currency) for currency in sorted(by_currency)]
    return rows, totals, per_currency
