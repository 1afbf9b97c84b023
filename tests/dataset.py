"""A generated CDR dataset with the totals it must produce, computed independently.

Nothing here imports the pipeline's arithmetic: expected rows are summed with
``Decimal`` from the raw CDR dicts, destinations found by a brute-force scan of the
dial-code table, so a bug in the pipeline cannot hide in its own expectation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
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
    return cdr


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


def generate(seed: int, total: int, end_time: float, customers: int, table: dict[str, str]) -> Dataset:
    """About ``total`` CDRs over the two hours before ``end_time``: single and batch messages,
    5 % re-published duplicates (some unkeyed, so on another partition), 2 % invalid."""
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
            bad = _cdr(rng, n, start + n * 7200 / total, customers, table)
            bad.update(shape, id=f"bad-{n}")
            pending.append(bad)
            data.invalid.append((reason, orjson.dumps(bad)))
            continue
        if roll < 0.07 and published:
            again = dict(rng.choice(published))
            data.duplicates += 1
            pending.append(again)
            continue
        cdr = _cdr(rng, n, start + n * 7200 / total, customers, table)
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
    """[attempts, connected, duration_ms, provider_charge, customer_charge, pending, dtmf] per row.

    CDRs that start before ``minute_cutoff`` (epoch seconds) have no minute rows: those
    buckets were past retention when they arrived.
    """
    rows: defaultdict[RowKey, list[int]] = defaultdict(lambda: [0] * 7)
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
    return dict(rows)
