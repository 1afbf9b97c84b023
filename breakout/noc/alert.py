"""The alert record: what the detector decided, as stored in its state and as published."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from breakout.noc.rules import AlertKey

State = Literal["raised", "cleared"]


def key_text(key: AlertKey) -> str:
    """The key as text: the JSON array ``["destination","provider"]`` (provider null: all of them)."""
    return orjson.dumps(list(key)).decode()


def incident_id(key: AlertKey, raised_at: int) -> str:
    """A stable id for one incident (its key and raise time), the same when the alert is re-sent."""
    return hashlib.sha256(f"{key_text(key)}@{raised_at}".encode()).hexdigest()[:16]


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Alert:
    """A raise or a clear. Times are event-time epoch seconds; ASRs are percent.

    ``asr`` and ``attempts`` describe the window that decided (``window_start`` to
    ``window_end``); ``threshold`` is the raise threshold frozen when the incident began,
    ``baseline_asr`` the baseline it came from (None: too few baseline attempts, the
    floor alone applied).
    """

    destination: str
    provider: str | None
    state: State
    asr: float
    baseline_asr: float | None
    threshold: float
    attempts: int
    window_start: int
    window_end: int
    detected_at: int
    incident: str

    @property
    def key(self) -> AlertKey:
        return (self.destination, self.provider)

    def record(self) -> dict[str, Any]:
        """The fields as they are, for the detector's own state in Redis."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        return cls(**record)

    def document(self, emitted_at_ms: int) -> dict[str, Any]:
        """The published JSON document (Kafka, Redis, the API): times in ISO 8601 UTC."""
        return {
            "key": key_text(self.key),
            "incident": self.incident,
            "destination": self.destination,
            "provider": self.provider,
            "state": self.state,
            "asr": self.asr,
            "baseline_asr": self.baseline_asr,
            "threshold": self.threshold,
            "attempts": self.attempts,
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "detected_at": iso(self.detected_at),
            "emitted_at": datetime.fromtimestamp(emitted_at_ms / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
