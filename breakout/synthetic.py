"""Synthetic CDRs for the demo, the tests and the benchmarks.

Deterministic for a given seed, so a test can regenerate the same dataset and
compute its expected totals independently of the pipeline.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Real dial codes, so the shipped dial-code table resolves them to named destinations.
DIAL_PREFIXES = (
    "447",
    "4420",
    "4412",
    "331",
    "336",
    "4930",
    "4915",
    "3906",
    "393",
    "3491",
    "346",
    "1212",
    "1415",
    "1310",
    "5255",
    "521",
    "5511",
    "5521",
    "8613",
    "8610",
    "9198",
    "9122",
    "8190",
    "813",
    "6141",
    "612",
    "2782",
    "2711",
    "23480",
    "2341",
    "2547",
    "25420",
    "201",
    "202",
    "9665",
    "9661",
    "9715",
    "9714",
    "6591",
    "656",
    "8210",
    "822",
    "3161",
    "3120",
    "4670",
    "468",
    "4792",
    "4722",
    "4540",
    "4533",
    "3585",
    "3589",
    "48501",
    "4822",
    "3531",
    "3538",
    "351912",
    "35121",
    "30694",
    "30210",
    "905",
    "90212",
    "74959",
    "7495",
)
STATUSES = ("answered", "answered", "answered", "failed", "busy", "no_answer", "cancelled")
# The final SIP code each status ends with, as a softswitch reports it (failures vary).
SIP_CODES = {
    "answered": (200,),
    "busy": (486,),
    "no_answer": (480,),
    "cancelled": (487,),
    "failed": (503, 404, 408, 500),
}


@dataclass(frozen=True)
class Profile:
    """The shape of a synthetic traffic mix.

    By default every customer calls every prefix through every provider, which gives each
    customer the most rows. ``prefixes_per_customer`` and ``providers_per_customer`` narrow
    each customer to a fixed random subset, as real traffic is: an account calls a few dozen
    destinations, routed through a few providers.
    """

    customers: int = 25
    providers: int = 4
    prefixes: int = len(DIAL_PREFIXES)
    currencies: tuple[str, ...] = ("USD", "EUR")
    prefixes_per_customer: int | None = None
    providers_per_customer: int | None = None


def cdr_stream(
    seed: int, start_time: float, rate: float, profile: Profile = Profile()
) -> Iterator[dict[str, Any]]:
    """An endless stream of valid CDR dicts, ``rate`` per second of event time from ``start_time``."""
    rng = random.Random(seed)
    prefixes = DIAL_PREFIXES[: profile.prefixes]
    providers = [f"prov-{p}" for p in range(profile.providers)]
    # Each customer's own prefixes and providers, drawn from a generator of their own so the
    # main sequence (and every dataset made without them) stays the same.
    own = random.Random(seed + 1)
    customer_prefixes = [
        own.sample(prefixes, profile.prefixes_per_customer) if profile.prefixes_per_customer else prefixes
        for _ in range(profile.customers)
    ]
    customer_providers = [
        own.sample(providers, profile.providers_per_customer) if profile.providers_per_customer else providers
        for _ in range(profile.customers)
    ]
    step = 1.0 / rate
    event_time = start_time
    sequence = 0
    while True:
        sequence += 1
        event_time += rng.expovariate(1.0) * step
        customer = rng.randrange(profile.customers)
        status = rng.choice(STATUSES)
        duration = rng.randint(1, 900) if status == "answered" else 0
        provider_rate = rng.randint(1, 90_000)  # micro-units per minute
        customer_rate = provider_rate + rng.randint(0, 30_000)
        cdr: dict[str, Any] = {
            "id": f"{seed}-{sequence}",
            "customer_id": f"cust-{customer:03d}",
            "provider_id": rng.choice(customer_providers[customer]),
            "dst": "+" + rng.choice(customer_prefixes[customer]) + "".join(rng.choices("0123456789", k=7)),
            "start_time": round(event_time, 3),
            "duration": duration,
            "status": status,
            "provider_charge": _micros(provider_rate * duration // 60),
            "customer_charge": _micros(customer_rate * duration // 60),
            "currency": profile.currencies[customer % len(profile.currencies)],
            "dtmf": rng.choice((0, 0, 0, 0, 1, 3)),
            "sip_code": rng.choice(SIP_CODES[status]),
            "pdd_ms": rng.randint(800, 6_000),
        }
        yield cdr


def _micros(value: int) -> str:
    """Micro-units as a decimal string with six places, the way a rating engine writes money."""
    return f"{value // 1_000_000}.{value % 1_000_000:06d}"
