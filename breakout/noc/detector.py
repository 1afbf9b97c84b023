"""The ASR-drop state machine: per key, normal → raised → normal, one raise and one clear per incident.

Evaluated once per minute boundary of event time, on the minute series only, so the
same minutes give the same alerts whatever the replay speed. Why each rule:

* **Every suffix of the window** (the last 1, 2, …, ``window_minutes`` minutes) is
  tested, so a sharp drop on a busy route raises on its first bad minute instead of
  waiting for a 15-minute average to sink.
* **Statistical confidence**: a suffix raises only if the Wilson score upper bound of its
  ASR (``z`` standard deviations) is below the threshold, so 30 attempts of ordinary
  noise never raise, however unlucky, while hundreds of attempts at half the ASR do.
* **Frozen threshold**: the threshold is fixed when the incident begins; otherwise the
  bad minutes entering the baseline would lower it and let a still-broken route clear.
* **Hysteresis and time** to clear: the last ``clear_minutes`` minutes must have at least
  ``min_attempts`` and an ASR at least ``hysteresis_points`` above the frozen threshold,
  at ``clear_minutes`` consecutive boundaries.
* **After a clear**, raise checks look only at minutes from the start of the window
  that proved the recovery, so the incident's own bad minutes cannot raise it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from breakout.noc.alert import Alert, incident_id
from breakout.noc.rules import AlertKey, Rule, Rules
from breakout.noc.series import PairCounts, RollingSeries


def wilson_upper(connected: int, attempts: int, z: float) -> float:
    """Upper bound of the Wilson score interval of connected/attempts, a fraction (0..1)."""
    p = connected / attempts
    z2n = z * z / attempts
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / attempts + z2n / (4 * attempts))
    return (centre + spread) / (1 + z2n)


def asr(connected: int, attempts: int) -> float:
    return round(100 * connected / attempts, 2)


@dataclass(frozen=True)
class KeyState:
    """What the detector remembers about a key beyond its counts.

    ``raised``: the open incident's raise alert (its threshold is frozen in it);
    ``streak``: consecutive boundaries at which it looked recovered;
    ``not_before``: after a clear, raise checks use only minutes starting at or after it.
    """

    raised: Alert | None = None
    streak: int = 0
    not_before: int = 0

    def record(self) -> dict[str, Any]:
        raised = self.raised.record() if self.raised else None
        return {"raised": raised, "streak": self.streak, "not_before": self.not_before}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> KeyState:
        raised = Alert.from_record(record["raised"]) if record["raised"] else None
        return cls(raised, record["streak"], record["not_before"])


def _sort_key(key: AlertKey) -> tuple[str, bool, str]:
    return (key[0], key[1] is not None, key[1] or "")


class Detector:
    """Keys' minute series and states; ``step`` takes the next minute and returns the alerts."""

    def __init__(self, rules: Rules, states: dict[AlertKey, KeyState] | None = None) -> None:
        self.rules = rules
        config = rules.detector
        self.window_minutes = config.window_minutes
        self.series = RollingSeries(config.window_minutes, config.baseline_minutes)
        self.states: dict[AlertKey, KeyState] = dict(states or {})

    def step(self, minute_start: int, pairs: PairCounts) -> list[Alert]:
        """Add the minute beginning at ``minute_start`` and evaluate the boundary where it ends."""
        self.series.push(pairs)
        return self.evaluate(minute_start + 60)

    def evaluate(self, boundary: int) -> list[Alert]:
        """Raise or clear each key at ``boundary`` (epoch seconds); keys in a stable order."""
        window = self.series.window()
        empty = ([0] * self.window_minutes, [0] * self.window_minutes)
        alerts: list[Alert] = []
        for key in sorted(window.keys() | self.states.keys(), key=_sort_key):
            rule = self.rules.rule_for(key)
            if not rule.enabled:
                continue
            state = self.states.get(key, KeyState())
            attempts, connected = window.get(key, empty)
            if state.raised is None:
                alert = self._raise(key, rule, state, boundary, attempts, connected)
                if alert is not None:
                    state = KeyState(alert)
            else:
                state, alert = self._clear(rule, state, boundary, attempts, connected)
            if alert is not None:
                alerts.append(alert)
            if state.raised is None and state.not_before <= boundary - self.window_minutes * 60:
                self.states.pop(key, None)  # nothing left to remember
            else:
                self.states[key] = state
        return alerts

    def _raise(
        self,
        key: AlertKey,
        rule: Rule,
        state: KeyState,
        boundary: int,
        attempts: list[int],
        connected: list[int],
    ) -> Alert | None:
        size = self.window_minutes
        first = max(0, size - (boundary - state.not_before) // 60)  # oldest minute a suffix may use
        if sum(attempts[first:]) < rule.min_attempts:
            return None
        base_attempts, base_connected = self.series.baseline(key)
        baseline_asr = asr(base_connected, base_attempts) if base_attempts >= rule.min_attempts else None
        threshold = rule.floor if baseline_asr is None else max(baseline_asr - rule.drop_points, rule.floor)
        if threshold <= 0:
            return None
        total = good = 0
        for index in range(size - 1, first - 1, -1):
            total += attempts[index]
            good += connected[index]
            if total >= rule.min_attempts and 100 * wilson_upper(good, total, rule.z) < threshold:
                return Alert(
                    destination=key[0],
                    provider=key[1],
                    state="raised",
                    asr=asr(good, total),
                    baseline_asr=baseline_asr,
                    threshold=round(threshold, 2),
                    attempts=total,
                    window_start=boundary - (size - index) * 60,
                    window_end=boundary,
                    detected_at=boundary,
                    incident=incident_id(key, boundary),
                )
        return None

    def _clear(
        self, rule: Rule, state: KeyState, boundary: int, attempts: list[int], connected: list[int]
    ) -> tuple[KeyState, Alert | None]:
        raised = state.raised
        assert raised is not None
        minutes = rule.clear_minutes
        total, good = sum(attempts[-minutes:]), sum(connected[-minutes:])
        recovered = (
            total >= rule.min_attempts and 100 * good / total >= raised.threshold + rule.hysteresis_points
        )
        if not recovered:
            return replace(state, streak=0), None
        if state.streak + 1 < minutes:
            return replace(state, streak=state.streak + 1), None
        window_start = boundary - minutes * 60
        cleared = replace(
            raised,
            state="cleared",
            asr=asr(good, total),
            attempts=total,
            window_start=window_start,
            window_end=boundary,
            detected_at=boundary,
        )
        return KeyState(not_before=window_start), cleared
