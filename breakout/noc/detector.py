"""The alert state machine: per metric and key, normal → raised → normal, one raise and one clear each.

Evaluated once per minute boundary of event time, on the minute series only, so the
same minutes give the same alerts whatever the replay speed. Each metric of each key
(ASR, NER, PDD; ``breakout.noc.checks`` says what raises and clears them) is its own
incident, with its own id: an ASR and an NER alert on the same route open and close
independently. Why each rule:

* **Every suffix of the window** (the last 1, 2, …, ``window_minutes`` minutes) is
  tested, so a sharp drop on a busy route raises on its first bad minute instead of
  waiting for a 15-minute average to sink.
* **Statistical confidence**: a suffix raises only if a confidence bound of its value
  (``z`` standard deviations) is past the threshold, so 30 attempts of ordinary noise
  never raise, however unlucky, while hundreds of attempts at half the ASR do.
* **Frozen threshold**: the threshold is fixed when the incident begins; otherwise the
  bad minutes entering the baseline would move it and let a still-broken route clear.
* **Hysteresis and time** to clear: the last ``clear_minutes`` minutes must be past the
  frozen threshold by a margin, at ``clear_minutes`` consecutive boundaries.
* **After a clear**, raise checks look only at minutes from the start of the window
  that proved the recovery, so the incident's own bad minutes cannot raise it again.

Every alert names the SIP codes whose share grew most since the baseline
(``breakout.noc.causes``): what the NOC asks next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from breakout.aggregate import ATTEMPTS, CONNECTED, PDD_CALLS, Counters
from breakout.noc.alert import Alert, Subject, incident_id, subject_of, subject_parts
from breakout.noc.causes import grown_causes
from breakout.noc.checks import CHECKS, percent
from breakout.noc.rules import METRICS, AlertKey, Metric, Rule, Rules
from breakout.noc.series import TRACKED, PairCounts, RollingSeries, Window


@dataclass(frozen=True)
class KeyState:
    """What the detector remembers about one subject (a metric of a key) beyond its counts.

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

    def __init__(self, rules: Rules, states: dict[Subject, KeyState] | None = None) -> None:
        self.rules = rules
        config = rules.detector
        self.window_minutes = config.window_minutes
        self.series = RollingSeries(config.window_minutes, config.baseline_minutes)
        self.states: dict[Subject, KeyState] = dict(states or {})

    def step(self, minute_start: int, pairs: PairCounts) -> list[Alert]:
        """Add the minute beginning at ``minute_start`` and evaluate the boundary where it ends."""
        self.series.push(pairs)
        return self.evaluate(minute_start + 60)

    def evaluate(self, boundary: int) -> list[Alert]:
        """Raise or clear each metric of each key at ``boundary`` (epoch seconds), in a stable order."""
        window = self.series.window()
        quiet: Window = {field: [0] * self.window_minutes for field in TRACKED}
        keys = window.keys() | {subject_parts(subject)[1] for subject in self.states}
        alerts: list[Alert] = []
        for key in sorted(keys, key=_sort_key):
            rule = self.rules.rule_for(key)
            minutes = window.get(key, quiet)
            baseline = self.series.baseline(key)
            for metric in METRICS:
                if not rule.watches(metric):
                    continue
                subject = subject_of(metric, key)
                state = self.states.get(subject, KeyState())
                if state.raised is None:
                    alert = self._raise(metric, key, rule, state, boundary, minutes, baseline)
                    if alert is not None:
                        state = KeyState(alert)
                else:
                    state, alert = self._clear(rule, state, boundary, minutes, baseline)
                if alert is not None:
                    alerts.append(alert)
                if state.raised is None and state.not_before <= boundary - self.window_minutes * 60:
                    self.states.pop(subject, None)  # nothing left to remember
                else:
                    self.states[subject] = state
        return alerts

    def _raise(
        self,
        metric: Metric,
        key: AlertKey,
        rule: Rule,
        state: KeyState,
        boundary: int,
        minutes: Window,
        baseline: Counters,
    ) -> Alert | None:
        size = self.window_minutes
        first = max(0, size - (boundary - state.not_before) // 60)  # oldest minute a suffix may use
        finding = CHECKS[metric].raises(rule, minutes, baseline, first)
        if finding is None:
            return None
        window = self.series.window_total(key, finding.oldest)
        base_attempts = baseline[ATTEMPTS]
        baseline_asr = (
            percent(baseline[CONNECTED], base_attempts) if base_attempts >= rule.min_attempts else None
        )
        return Alert(
            metric=metric,
            destination=key[0],
            provider=key[1],
            state="raised",
            value=finding.value,
            baseline=finding.baseline,
            threshold=finding.threshold,
            attempts=window[ATTEMPTS],
            pdd_calls=window[PDD_CALLS] if metric == "pdd" else None,
            asr=percent(window[CONNECTED], window[ATTEMPTS]),
            baseline_asr=baseline_asr,
            grown_causes=grown_causes(window, baseline),
            window_start=boundary - (size - finding.oldest) * 60,
            window_end=boundary,
            detected_at=boundary,
            incident=incident_id(subject_of(metric, key), boundary),
        )

    def _clear(
        self, rule: Rule, state: KeyState, boundary: int, minutes: Window, baseline: Counters
    ) -> tuple[KeyState, Alert | None]:
        raised = state.raised
        assert raised is not None
        value = CHECKS[raised.metric].recovered(rule, minutes, raised.threshold)
        if value is None:
            return replace(state, streak=0), None
        if state.streak + 1 < rule.clear_minutes:
            return replace(state, streak=state.streak + 1), None
        oldest = self.window_minutes - rule.clear_minutes
        window = self.series.window_total(raised.key, oldest)
        window_start = boundary - rule.clear_minutes * 60
        cleared = replace(
            raised,
            state="cleared",
            value=value,
            attempts=window[ATTEMPTS],
            pdd_calls=window[PDD_CALLS] if raised.metric == "pdd" else None,
            asr=percent(window[CONNECTED], window[ATTEMPTS]),
            grown_causes=grown_causes(window, baseline),
            window_start=window_start,
            window_end=boundary,
            detected_at=boundary,
        )
        return KeyState(not_before=window_start), cleared
