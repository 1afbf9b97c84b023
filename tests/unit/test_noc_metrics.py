"""NER drops, PDD rises and the grown SIP codes, on synthetic minutes built like the mirror's rows."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest

from breakout.aggregate import (
    ATTEMPTS,
    CONNECTED,
    EFFECTIVE,
    FIRST_SIP,
    PDD_CALLS,
    PDD_MS,
    SIP_LABELS,
    Counters,
    add,
    empty,
    sip_slot,
)
from breakout.cdr import is_effective
from breakout.noc.alert import Alert, Cause
from breakout.noc.causes import grown_causes
from breakout.noc.checks import pdd_threshold
from breakout.noc.detector import Detector
from breakout.noc.rules import AlertKey, parse_rules
from breakout.noc.series import PairCounts, RollingSeries

START = 1_795_600_800  # 2026-11-25T10:00:00Z
RULES = "[detector]\nbaseline_minutes = 60\nsettle_seconds = 0\n"
RULES += "[defaults]\nner_enabled = true\npdd_enabled = true\n"
ALL_ON = parse_rules(RULES, "test")
Mix = dict[int | None, float]  # final SIP code (None: the CDR had none) -> share of attempts
NORMAL: Mix = {200: 0.5, 486: 0.2, 480: 0.15, 404: 0.1, 503: 0.05}
OUTAGE: Mix = {**{code: share / 10 for code, share in NORMAL.items()}, 503: 0.9 + NORMAL[503] / 10}
BUSY: Mix = {**{code: share / 10 for code, share in NORMAL.items()}, 486: 0.9 + NORMAL[486] / 10}
Route = tuple[int, Mix, float]  # attempts per minute, code mix, median PDD in ms (0: no PDD)
A, B, C1, C2 = ("Andorra", "prov-1"), ("Belize", "prov-2"), ("Chad", "prov-1"), ("Chad", "prov-2")


def row(rng: random.Random, attempts: int, mix: Mix, pdd_median: float) -> Counters:
    """One pair's counters in one minute, as the aggregator adds CDRs: 200 answers, PDD log-normal.

    A 503 fails fast (a tenth of the usual PDD), as a provider rejecting calls does.
    """
    counters = empty()
    for code in rng.choices(list(mix), list(mix.values()), k=attempts):
        counters[ATTEMPTS] += 1
        counters[CONNECTED] += code == 200
        counters[EFFECTIVE] += is_effective(code == 200, None, code, None)
        if code is not None:
            counters[sip_slot(code)] += 1
        if pdd_median:
            median = pdd_median / 10 if code == 503 else pdd_median
            counters[PDD_MS] += round(rng.lognormvariate(math.log(median), 0.5))
            counters[PDD_CALLS] += 1
    return counters


def minutes(rng: random.Random, routes: dict[tuple[str, str], Route], count: int) -> list[PairCounts]:
    return [{pair: row(rng, *route) for pair, route in routes.items()} for _ in range(count)]


def run(detector: Detector, series: Iterable[PairCounts], first: int = START) -> list[Alert]:
    alerts: list[Alert] = []
    for index, pairs in enumerate(series):
        alerts.extend(detector.step(first + index * 60, pairs))
    return alerts


def steady(**changed: Route) -> dict[tuple[str, str], Route]:
    """Andorra and Belize on one provider each, Chad (the control) on both, all normal unless changed."""
    routes = {
        A: (60, NORMAL, 3000.0),
        B: (60, NORMAL, 3000.0),
        C1: (30, NORMAL, 3000.0),
        C2: (30, NORMAL, 3000.0),
    }
    return routes | {{"a": A, "b": B}[name]: route for name, route in changed.items()}


def test_503s_drop_asr_and_ner_while_busy_callees_drop_only_asr_and_the_control_stays_quiet() -> None:
    rng = random.Random(1)
    series = minutes(rng, steady(), 90)
    series += minutes(rng, steady(a=(60, OUTAGE, 3000.0), b=(60, BUSY, 3000.0)), 20)
    alerts = run(Detector(ALL_ON), series)
    assert sorted(((a.key, a.metric, a.state) for a in alerts), key=str) == sorted(
        [
            (("Andorra", None), "asr", "raised"),
            (("Andorra", None), "ner", "raised"),
            (A, "asr", "raised"),
            (A, "ner", "raised"),
            (("Belize", None), "asr", "raised"),
            (B, "asr", "raised"),
        ],
        key=str,
    )
    drop = START + 90 * 60
    for alert in alerts:
        assert drop + 60 <= alert.detected_at <= drop + 180, alert
        assert alert.value < 15 and alert.asr < 15 and alert.attempts >= 30 and alert.pdd_calls is None
        assert alert.grown_causes[0].code == ("503" if alert.destination == "Andorra" else "486"), alert
        assert alert.grown_causes[0].window_share > 80 and alert.grown_causes[0].baseline_share < 25
        assert alert.baseline is not None and alert.baseline_asr is not None and 45 < alert.baseline_asr < 55
        assert alert.threshold == pytest.approx(alert.baseline - 20, abs=0.01)
        if alert.metric == "asr":
            assert (alert.value, alert.baseline) == (alert.asr, alert.baseline_asr)
        else:  # NER: answered, busy and unanswered of the normal mix
            assert 80 < alert.baseline < 90


def test_each_metric_is_its_own_incident_with_its_own_clear() -> None:
    rng = random.Random(2)
    series = minutes(rng, steady(), 90) + minutes(rng, steady(a=(60, OUTAGE, 3000.0)), 20)
    series += minutes(rng, steady(), 30)
    alerts = [a for a in run(Detector(ALL_ON), series) if a.key == A]
    assert [(a.metric, a.state) for a in alerts][:2] == [("asr", "raised"), ("ner", "raised")]
    assert sorted((a.metric, a.state) for a in alerts[2:]) == [("asr", "cleared"), ("ner", "cleared")]
    by_metric = {(a.metric, a.state): a for a in alerts}
    assert by_metric["asr", "raised"].incident != by_metric["ner", "raised"].incident
    for metric in ("asr", "ner"):
        raised, cleared = by_metric[metric, "raised"], by_metric[metric, "cleared"]
        assert (cleared.incident, cleared.threshold, cleared.baseline) == (
            raised.incident,
            raised.threshold,
            raised.baseline,
        )
        assert cleared.value >= raised.threshold + 5 and cleared.window_end - cleared.window_start == 300
        # The baseline now holds outage minutes: 503 did not grow into the recovered window.
        assert "503" not in [cause.code for cause in cleared.grown_causes]


def test_a_pdd_rise_raises_once_and_clears_below_the_threshold_minus_the_hysteresis() -> None:
    rng = random.Random(3)
    route = {A: (100, NORMAL, 3000.0)}
    series = minutes(rng, route, 90) + minutes(rng, {A: (100, NORMAL, 8000.0)}, 10)
    series += minutes(rng, route, 20)
    alerts = run(Detector(ALL_ON), series)
    assert [(a.key, a.metric, a.state) for a in alerts] == [
        (("Andorra", None), "pdd", "raised"),
        (A, "pdd", "raised"),
        (("Andorra", None), "pdd", "cleared"),
        (A, "pdd", "cleared"),
    ]
    raised, cleared = alerts[1], alerts[3]
    assert raised.detected_at == START + 91 * 60 and raised.window_start == START + 90 * 60
    assert raised.attempts == raised.pdd_calls == 100 and raised.value > 7000
    assert (
        raised.baseline is not None and 3000 < raised.baseline < 3800
    )  # a log-normal's mean is above its median
    assert raised.threshold == pytest.approx(1.5 * raised.baseline, abs=0.1)  # the ratio beats + 1000 ms here
    assert cleared.value <= raised.threshold - 500 and cleared.pdd_calls == 500
    # The last 5 minutes' mean passes threshold - 500 after 4 or 5 good minutes, then 5 boundaries in a row.
    recovery = START + 100 * 60
    assert recovery + 8 * 60 <= cleared.detected_at <= recovery + 9 * 60


def test_a_pdd_hovering_just_under_the_threshold_neither_clears_nor_raises_again() -> None:
    rng = random.Random(4)
    series = minutes(rng, {A: (100, NORMAL, 3000.0)}, 90) + minutes(rng, {A: (100, NORMAL, 8000.0)}, 5)
    alerts = run(detector := Detector(ALL_ON), series)
    threshold = alerts[-1].threshold
    no_fast_failures: Mix = {200: 0.5, 486: 0.3, 480: 0.2}
    hovering = {A: (200, no_fast_failures, (threshold - 200) / math.exp(0.125))}  # mean 200 ms under it
    assert run(detector, minutes(rng, hovering, 60), START + 95 * 60) == []
    assert detector.states[("Andorra", "prov-1", "pdd")].raised == alerts[-1]


def test_pdd_needs_enough_calls_carrying_one_and_a_ceiling_needs_no_baseline() -> None:
    rng = random.Random(5)
    slow = minutes(rng, {A: (60, NORMAL, 9000.0)}, 20)  # a new route: no baseline yet
    assert run(Detector(ALL_ON), slow) == []
    ceiling = parse_rules(RULES + "pdd_ceiling_ms = 6000\n", "test")
    alerts = run(Detector(ceiling), slow)
    assert [(a.key, a.metric, a.baseline, a.threshold) for a in alerts] == [
        (key, "pdd", None, 6000.0) for key in (("Andorra", None), A)
    ]
    assert alerts[0].detected_at == START + 60  # 60 calls at 9+ s: 6000 * (1 + 3 / sqrt(60)) = 8324
    few = parse_rules(RULES + "pdd_ceiling_ms = 6000\npdd_min_calls = 1000\n", "test")
    assert run(Detector(few), slow) == []


@pytest.mark.parametrize(
    ("override", "metrics"),
    [
        ("ner_enabled = false", {"asr"}),
        ("asr_enabled = false", {"ner"}),
        ("ner_floor = 0\nner_drop_points = 90", {"asr"}),  # a drop of 90 NER points is not reached
        ("enabled = false", set()),
    ],
)
def test_each_metric_of_a_destination_is_switched_and_tuned_alone(override: str, metrics: set[str]) -> None:
    rules = parse_rules(RULES + f'[destinations."Andorra"]\n{override}\n', "test")
    rng = random.Random(6)
    series = minutes(rng, steady(), 90) + minutes(rng, steady(a=(60, OUTAGE, 3000.0)), 10)
    assert {a.metric for a in run(Detector(rules), series) if a.key == A} == metrics


def test_steady_traffic_with_every_metric_watched_raises_nothing_in_four_hours() -> None:
    """90 quiet keys (2-3 attempts a minute) and three with 40, each at its own steady mix and PDD."""
    rng = random.Random(7)
    detector = Detector(ALL_ON)
    quiet = [(f"Country {d}", f"prov-{p}") for d in range(30) for p in range(3)]
    busy = [(f"Busy {d}", "prov-1") for d in range(3)]
    routes: dict[tuple[str, str], tuple[Mix, float]] = {}
    for pair in quiet + busy:
        answered = rng.uniform(0.2, 0.7)
        routes[pair] = (
            {200: answered, 486: (1 - answered) / 2, 503: (1 - answered) / 2},
            rng.uniform(800, 6000),
        )
    alerts: list[Alert] = []
    for index in range(240):
        pairs = {
            pair: row(rng, rng.randint(2, 3) if pair in quiet else 40, mix, pdd)
            for pair, (mix, pdd) in routes.items()
        }
        alerts.extend(detector.step(START + index * 60, pairs))
    assert alerts == []


def test_pdd_threshold() -> None:
    rule = ALL_ON.defaults
    assert pdd_threshold(rule, 1000.0) == 2000.0  # fast route: + 1000 ms beats x 1.5
    assert pdd_threshold(rule, 4000.0) == 6000.0  # slow route: x 1.5 beats + 1000 ms
    assert pdd_threshold(rule, None) == 0.0  # no baseline, no ceiling: never
    capped = parse_rules("[defaults]\npdd_ceiling_ms = 5000\n", "t").defaults
    assert (pdd_threshold(capped, 4000.0), pdd_threshold(capped, None)) == (5000.0, 5000.0)


def _counters(attempts: int, codes: dict[int, int]) -> Counters:
    counters = empty()
    counters[ATTEMPTS] = attempts
    for code, count in codes.items():
        counters[sip_slot(code)] += count
    return counters


def test_grown_causes_are_the_top_three_codes_that_grew_in_share_points() -> None:
    baseline = _counters(1000, {200: 700, 503: 100, 404: 50, 408: 20})  # none: 130
    window = _counters(100, {503: 40, 404: 20, 408: 15, 500: 5})  # none: 20
    assert grown_causes(window, baseline) == (
        Cause("503", "Service Unavailable", 40.0, 10.0, 30.0, 40, 100),
        Cause("404", "Not Found", 20.0, 5.0, 15.0, 20, 50),
        Cause("408", "Request Timeout", 15.0, 2.0, 13.0, 15, 20),
    )
    assert grown_causes(_counters(100, {}), baseline) == (
        Cause("none", "No SIP code in the CDR", 100.0, 13.0, 87.0, 100, 130),
    )
    assert grown_causes(window, _counters(0, {})) == ()  # nothing to compare with
    assert grown_causes(baseline, baseline) == ()  # nothing grew


def test_rolling_series_keeps_exact_sums_of_every_counter_it_watches() -> None:
    rng = random.Random(8)
    series = RollingSeries(window_minutes=3, baseline_minutes=4)
    pairs = [A, C1, C2]
    pushed: list[dict[tuple[str, str], Counters]] = []
    for _ in range(20):
        mix: Mix = {None: 0.2, 200: 0.4, 503: 0.2, 486: 0.1, 699: 0.1}
        minute = {p: row(rng, rng.randint(0, 4), mix, 3000.0 * rng.randint(0, 1)) for p in pairs}
        pushed.append(minute)
        series.push(minute)

    def total(key: AlertKey, minutes: list[dict[tuple[str, str], Counters]]) -> Counters:
        summed = empty()
        for minute in minutes:
            for pair, counters in minute.items():
                if (pair == key or (key[1] is None and pair[0] == key[0])) and counters[ATTEMPTS]:
                    add(summed, counters)
        kept = [
            ATTEMPTS,
            CONNECTED,
            EFFECTIVE,
            PDD_MS,
            PDD_CALLS,
            *range(FIRST_SIP, FIRST_SIP + len(SIP_LABELS)),
        ]
        return [value if index in kept else 0 for index, value in enumerate(summed)]

    for key in [A, C1, ("Chad", None)]:
        assert series.baseline(key) == total(key, pushed[-7:-3])
        for oldest in range(3):
            assert series.window_total(key, oldest) == total(key, pushed[-3 + oldest :])
        window = series.window()[key]
        for field in (ATTEMPTS, CONNECTED, EFFECTIVE, PDD_MS, PDD_CALLS):
            assert window[field] == [total(key, [minute])[field] for minute in pushed[-3:]]
