"""The alert record: what the detector decided, as stored in its state and as published."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from breakout.noc.rules import METRICS, AlertKey, Metric

State = Literal["raised", "cleared"]
# What one incident is about: the key alone for ASR, the key and the metric otherwise.
# ASR keeps the bare key, its form from before NER and PDD were watched, so the states,
# open incidents and incident ids recorded by earlier versions stay valid.
Subject = AlertKey | tuple[str, str | None, Metric]


def key_text(key: AlertKey) -> str:
    """The key as text: the JSON array ``["destination","provider"]`` (provider null: all of them)."""
    return orjson.dumps(list(key)).decode()


def subject_of(metric: Metric, key: AlertKey) -> Subject:
    return key if metric == "asr" else (key[0], key[1], metric)


def subject_parts(subject: Subject) -> tuple[Metric, AlertKey]:
    """The metric and the key of ``subject``."""
    if len(subject) == 2:
        return "asr", (subject[0], subject[1])
    return subject[2], (subject[0], subject[1])


def subject_text(subject: Subject) -> str:
    """The subject as text, the field of the state and open-incident hashes: a JSON array."""
    return orjson.dumps(list(subject)).decode()


def parse_subject(text: bytes | str) -> Subject:
    """The subject of ``subject_text``; ``ValueError`` if it is not one."""
    parts = orjson.loads(text)
    match parts:
        case [str(destination), str() | None as provider]:
            return (destination, provider)
        case [str(destination), str() | None as provider, str(metric)] if metric in METRICS[1:]:
            return (destination, provider, metric)
    raise ValueError(f"not an alert subject: {parts!r}")


def incident_id(subject: Subject, raised_at: int) -> str:
    """A stable id for one incident (its subject and raise time), the same when the alert is re-sent."""
    return hashlib.sha256(f"{subject_text(subject)}@{raised_at}".encode()).hexdigest()[:16]


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cause:
    """A final SIP code (``none``: no code in the CDR) whose share of attempts grew.

    Shares are percent of the attempts of the alert's window and of the baseline;
    ``change_points`` is the difference.
    """

    code: str
    label: str
    window_share: float
    baseline_share: float
    change_points: float
    window_count: int
    baseline_count: int


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A raise or a clear of one metric of one key. Times are event-time epoch seconds.

    ``value`` is the metric over the window that decided (``window_start`` to
    ``window_end``): ASR and NER in percent, PDD in milliseconds; ``threshold`` the raise
    threshold frozen when the incident began, ``baseline`` the baseline it came from (None:
    too small a baseline, only the floor or ceiling applied). ``asr`` and ``baseline_asr``
    are the ASR of the same window and baseline whatever the metric (for an ASR alert, the
    value and baseline again), ``attempts`` the window's attempts, ``pdd_calls`` (PDD
    alerts) its calls that carried a PDD.
    """

    metric: Metric
    destination: str
    provider: str | None
    state: State
    value: float
    baseline: float | None
    threshold: float
    attempts: int
    pdd_calls: int | None
    asr: float
    baseline_asr: float | None
    grown_causes: tuple[Cause, ...]
    window_start: int
    window_end: int
    detected_at: int
    incident: str

    @property
    def key(self) -> AlertKey:
        return (self.destination, self.provider)

    @property
    def subject(self) -> Subject:
        return subject_of(self.metric, self.key)

    def record(self) -> dict[str, Any]:
        """The fields as they are, for the detector's own state in Redis."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        """The alert of ``record``, also one stored before NER and PDD (an ASR alert without causes)."""
        fields = {"metric": "asr", "value": record["asr"], "baseline": record["baseline_asr"]}
        fields |= {"pdd_calls": None, **record}
        fields["grown_causes"] = tuple(Cause(**cause) for cause in record.get("grown_causes", ()))
        return cls(**fields)

    def document(self, emitted_at_ms: int) -> dict[str, Any]:
        """The published JSON document (Kafka, Redis, the API): times in ISO 8601 UTC.

        ``pdd_calls`` only in PDD alerts.
        """
        document: dict[str, Any] = {
            "key": key_text(self.key),
            "incident": self.incident,
            "metric": self.metric,
            "destination": self.destination,
            "provider": self.provider,
            "state": self.state,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "attempts": self.attempts,
        }
        if self.metric == "pdd":
            document["pdd_calls"] = self.pdd_calls
        document |= {
            "asr": self.asr,
            "baseline_asr": self.baseline_asr,
            "grown_causes": [asdict(cause) for cause in self.grown_causes],
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "detected_at": iso(self.detected_at),
            "emitted_at": datetime.fromtimestamp(emitted_at_ms / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        return document
