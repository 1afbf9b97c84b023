"""The one status line ``breakout up`` keeps on the console, from the API's ``/metrics``.

Pure: it turns two scrapes of the Prometheus text, and the seconds between them, into
the figures a person watching a demo wants — CDRs counted a second, messages the ingest
has yet to read, how old the newest complete answer is, how many CDRs were dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    accepted: float = 0.0
    rejected: float = 0.0
    lag: float | None = None  # messages on the CDR topic not yet read, over every partition
    as_of_age: float | None = None  # seconds

    @classmethod
    def parse(cls, text: str, topic: str) -> Scrape:
        accepted = rejected = 0.0
        lag: float | None = None
        as_of_age: float | None = None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "breakout_worker_cdrs":
                    outcome = sample.labels.get("outcome", "")
                    if outcome == "accepted":
                        accepted += sample.value
                    elif outcome.startswith("rejected:"):
                        rejected += sample.value
                elif sample.name == "breakout_consumer_lag" and sample.labels.get("topic") == topic:
                    lag = (lag or 0.0) + sample.value
                elif sample.name == "breakout_mirror_as_of_age_seconds":
                    as_of_age = sample.value
        return cls(accepted, rejected, lag, as_of_age)


def status_line(before: Scrape, after: Scrape, seconds: float) -> str:
    """``CDR/s 201 · lag 0 msgs · as_of 1.2 s old · dead letters 0``; ``-`` for what is not known yet."""
    rate = max(0.0, after.accepted - before.accepted) / seconds if seconds > 0 else 0.0
    lag = "-" if after.lag is None else f"{after.lag:,.0f} msgs"
    age = "-" if after.as_of_age is None else f"{after.as_of_age:,.1f} s old"
    return f"CDR/s {rate:,.0f} · lag {lag} · as_of {age} · dead letters {after.rejected:,.0f}"
