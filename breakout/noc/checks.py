"""What raises and what clears, per metric: a ratio that drops (ASR, NER), a mean that rises (PDD).

Both kinds test every suffix of the window (the last 1, 2, …, ``window_minutes`` minutes)
against a threshold drawn from the key's baseline, and raise only when a confidence
bound of the suffix's value is past the threshold, so a sharp change on a busy route
raises on its first bad minute while ordinary noise on a quiet one never does:

* **Ratios** (ASR = connected / attempts, NER = effective / attempts): the upper bound of
  the Wilson score interval at ``z`` below ``max(baseline - drop, floor)``.
* **PDD** (mean post-dial delay of the calls that carried one): the rows keep sums, not
  squares, so the spread is not measured; the test assumes PDD's standard deviation is at
  most its mean (a coefficient of variation of 1, above what a route's delays show
  unless many hit a timer). At the threshold θ that makes the standard error of a mean of
  n calls at most θ/√n, so the suffix raises when its mean is at least θ·(1 + z/√n):
  100 calls at 6.5 s prove a rise past 5 s, 30 calls need 7.7 s. θ is
  ``max(baseline + pdd_rise_ms, baseline * pdd_rise_ratio)``: an absolute margin for fast
  routes, a relative one for slow ones, capped by ``pdd_ceiling_ms`` when set.

Clearing needs the last ``clear_minutes`` minutes past the frozen threshold by the
hysteresis margin, measured plainly (the recovery has ``clear_minutes`` boundaries in a
row to prove itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from breakout.aggregate import ATTEMPTS, CONNECTED, EFFECTIVE, PDD_CALLS, PDD_MS, Counters
from breakout.noc.rules import Metric, Rule
from breakout.noc.series import Window


def wilson_upper(connected: int, attempts: int, z: float) -> float:
    """Upper bound of the Wilson score interval of connected/attempts, a fraction (0..1)."""
    p = connected / attempts
    z2n = z * z / attempts
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / attempts + z2n / (4 * attempts))
    return (centre + spread) / (1 + z2n)


def percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 2)


@dataclass(frozen=True)
class Finding:
    """A raise: the metric over the suffix that decided, where that suffix starts, the comparison.

    ``oldest`` is the window position of the suffix's first minute; ``baseline`` is None
    when the baseline was too small and only the floor or ceiling applied.
    """

    value: float
    baseline: float | None
    threshold: float
    oldest: int


class Check(Protocol):
    def raises(self, rule: Rule, window: Window, baseline: Counters, first: int) -> Finding | None:
        """The raise, if a suffix of ``window`` starting at or after position ``first`` proves one."""

    def recovered(self, rule: Rule, window: Window, threshold: float) -> float | None:
        """The value of the last ``clear_minutes`` if it is past ``threshold`` by the hysteresis."""


@dataclass(frozen=True)
class RatioLimits:
    drop_points: float
    floor: float
    hysteresis_points: float


@dataclass(frozen=True)
class RatioDrop:
    """ASR or NER: the share of attempts that ``hits`` (a row position) counts, in percent."""

    hits: int
    limits: Callable[[Rule], RatioLimits]

    def raises(self, rule: Rule, window: Window, baseline: Counters, first: int) -> Finding | None:
        attempts, hits = window[ATTEMPTS], window[self.hits]
        if sum(attempts[first:]) < rule.min_attempts:
            return None
        limits = self.limits(rule)
        base_attempts = baseline[ATTEMPTS]
        level = percent(baseline[self.hits], base_attempts) if base_attempts >= rule.min_attempts else None
        threshold = limits.floor if level is None else max(level - limits.drop_points, limits.floor)
        if threshold <= 0:
            return None
        total = good = 0
        for index in range(len(attempts) - 1, first - 1, -1):
            total += attempts[index]
            good += hits[index]
            if total < rule.min_attempts or 100 * good >= threshold * total:
                continue  # too few attempts, or at the threshold already: the bound is above it too
            if 100 * wilson_upper(good, total, rule.z) < threshold:
                return Finding(percent(good, total), level, round(threshold, 2), index)
        return None

    def recovered(self, rule: Rule, window: Window, threshold: float) -> float | None:
        minutes = rule.clear_minutes
        total, good = sum(window[ATTEMPTS][-minutes:]), sum(window[self.hits][-minutes:])
        margin = self.limits(rule).hysteresis_points
        if total >= rule.min_attempts and 100 * good / total >= threshold + margin:
            return percent(good, total)
        return None


class PddRise:
    """Mean post-dial delay in milliseconds, over the calls that carried one."""

    def raises(self, rule: Rule, window: Window, baseline: Counters, first: int) -> Finding | None:
        delays, calls = window[PDD_MS], window[PDD_CALLS]
        needed = rule.pdd_min_calls
        if sum(calls[first:]) < needed:
            return None
        level = round(baseline[PDD_MS] / baseline[PDD_CALLS], 1) if baseline[PDD_CALLS] >= needed else None
        threshold = pdd_threshold(rule, level)
        if threshold <= 0:
            return None
        total_ms = total = 0
        for index in range(len(calls) - 1, first - 1, -1):
            total_ms += delays[index]
            total += calls[index]
            if total < needed or total_ms < threshold * total:
                continue  # too few calls, or a mean under the threshold: the bound is under it too
            if total_ms / total >= threshold * (1 + rule.z / math.sqrt(total)):
                return Finding(round(total_ms / total, 1), level, round(threshold, 1), index)
        return None

    def recovered(self, rule: Rule, window: Window, threshold: float) -> float | None:
        minutes = rule.clear_minutes
        total_ms, total = sum(window[PDD_MS][-minutes:]), sum(window[PDD_CALLS][-minutes:])
        if total >= rule.pdd_min_calls and total_ms / total <= threshold - rule.pdd_hysteresis_ms:
            return round(total_ms / total, 1)
        return None


def pdd_threshold(rule: Rule, baseline: float | None) -> float:
    """The mean PDD (ms) above which a route has slowed: 0 (never) without baseline or ceiling."""
    ceiling = rule.pdd_ceiling_ms
    if baseline is None:
        return float(ceiling)
    rise = max(baseline + rule.pdd_rise_ms, baseline * rule.pdd_rise_ratio)
    return min(rise, ceiling) if ceiling else rise


def _asr_limits(rule: Rule) -> RatioLimits:
    return RatioLimits(rule.drop_points, rule.floor, rule.hysteresis_points)


def _ner_limits(rule: Rule) -> RatioLimits:
    return RatioLimits(rule.ner_drop_points, rule.ner_floor, rule.ner_hysteresis_points)


CHECKS: dict[Metric, Check] = {
    "asr": RatioDrop(CONNECTED, _asr_limits),
    "ner": RatioDrop(EFFECTIVE, _ner_limits),
    "pdd": PddRise(),
}
