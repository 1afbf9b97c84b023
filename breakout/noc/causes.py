"""The SIP codes behind an alert: those whose share of attempts grew most since the baseline.

An ASR or NER drop says that calls fail, not why; the final SIP codes do. A provider
answering 503 for a destination shows as 503 going from about 1 % to most attempts, and
busy callees as 486. The comparison is ``breakout.series.cause_mix``, the one the read
API's ``/v1/causes`` makes, so an alert and the cause panel rank codes alike.
"""

from __future__ import annotations

from breakout.aggregate import ATTEMPTS, Counters
from breakout.noc.alert import Cause
from breakout.series import cause_mix

TOP = 3


def grown_causes(window: Counters, baseline: Counters) -> tuple[Cause, ...]:
    """The (at most ``TOP``) codes whose share grew most from ``baseline`` to ``window``, in share points.

    Only codes that grew; none at all without baseline attempts to compare with.
    """
    if not window[ATTEMPTS] or not baseline[ATTEMPTS]:
        return ()
    causes: list[Cause] = []
    for row in cause_mix(window, baseline):
        change = float(row["change_points"])
        if change <= 0 or len(causes) == TOP:
            break
        causes.append(
            Cause(
                code=row["code"],
                label=row["label"],
                window_share=float(row["share"]),
                baseline_share=float(row["previous_share"]),
                change_points=change,
                window_count=row["count"],
                baseline_count=row["previous_count"],
            )
        )
    return tuple(causes)
