"""The ASR-drop state machine on synthetic minute series: raise fast, never on noise, clear once."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from breakout.aggregate import ATTEMPTS, CONNECTED, empty
from breakout.noc.alert import Alert
from breakout.noc.checks import wilson_upper
from breakout.noc.clock import due_minutes, effective_watermark, may_be_due
from breakout.noc.detector import Detector, KeyState
from breakout.noc.rules import parse_rules
from breakout.noc.series import PairCounts, RollingSeries, with_destination_totals

START = 1_795_600_800  # 2026-11-25T10:00:00Z
HOUR_BASELINE = parse_rules("[detector]\nbaseline_minutes = 60\nsettle_seconds = 0\n", "test")
PAIR = ("Peru", "prov-1")
Traffic = dict[tuple[str, str], tuple[int, float]]  # pair -> (attempts per minute, ASR as a fraction)


def minutes(rng: random.Random, traffic: Traffic, count: int) -> list[PairCounts]:
    """``count`` minutes of binomial traffic: each attempt connects with the pair's ASR."""
    return [
        {pair: (n, sum(rng.random() < p for _ in range(n))) for pair, (n, p) in traffic.items() if n}
        for _ in range(count)
    ]


def run(detector: Detector, series: Iterable[PairCounts], first: int = START) -> list[Alert]:
    alerts: list[Alert] = []
    for index, pairs in enumerate(series):
        alerts.extend(detector.step(first + index * 60, pairs))
    return alerts


def busy_route(
    asr_before: float, asr_after: float, before: int, after: int, seed: int = 1
) -> list[PairCounts]:
    rng = random.Random(seed)
    others = {("Peru", "prov-2"): (100, 0.5), ("Chile", "prov-1"): (100, 0.5)}
    return minutes(rng, {PAIR: (100, asr_before), **others}, before) + minutes(
        rng, {PAIR: (100, asr_after), **others}, after
    )


def test_wilson_upper_bound() -> None:
    assert wilson_upper(50, 100, 3.0) == pytest.approx(0.6437, abs=1e-4)
    assert wilson_upper(0, 30, 3.0) == pytest.approx(0.2308, abs=1e-4)
    assert wilson_upper(3, 30, 3.0) > 0.30 > wilson_upper(6, 60, 3.0)  # 10 %: 30 attempts are not enough


def test_a_sharp_drop_on_a_busy_route_raises_once_on_its_first_bad_minute() -> None:
    detector = Detector(HOUR_BASELINE)
    alerts = run(detector, busy_route(0.5, 0.1, before=90, after=30))
    assert len(alerts) == 1
    alert = alerts[0]
    drop = START + 90 * 60
    assert (alert.destination, alert.provider, alert.state) == ("Peru", "prov-1", "raised")
    assert alert.detected_at == alert.window_end == drop + 60
    assert alert.window_start == drop and alert.attempts == 100 and alert.asr < 20
    assert alert.baseline_asr is not None and 45 < alert.baseline_asr < 55
    assert alert.threshold == pytest.approx(alert.baseline_asr - 20)
    assert detector.states[("Peru", "prov-1")].raised == alert


def test_a_drop_on_one_of_four_providers_does_not_raise_the_destination() -> None:
    rng = random.Random(2)
    providers = [("Peru", f"prov-{n}") for n in range(4)]
    steady: Traffic = {pair: (40, 0.5) for pair in providers}
    dropped: Traffic = {**steady, providers[0]: (40, 0.1)}
    alerts = run(Detector(HOUR_BASELINE), minutes(rng, steady, 90) + minutes(rng, dropped, 60))
    assert [(a.key, a.state) for a in alerts] == [(providers[0], "raised")]


def test_a_quieter_route_needs_more_minutes_and_reports_the_window_that_decided() -> None:
    rng = random.Random(3)
    quiet = minutes(rng, {PAIR: (12, 0.5)}, 90) + minutes(rng, {PAIR: (12, 0.1)}, 15)
    alerts = run(Detector(HOUR_BASELINE), quiet)
    assert [a.key for a in alerts] == [("Peru", None), PAIR]  # the only provider: the destination too
    minutes_taken = (alerts[0].detected_at - (START + 90 * 60)) // 60
    assert 3 <= minutes_taken <= 8
    assert alerts[0].window_start >= START + 90 * 60 - 60  # the suffix is (almost) all bad minutes
    assert alerts[0].attempts >= 30


def test_it_clears_once_after_recovering_above_threshold_plus_hysteresis_for_clear_minutes() -> None:
    series = busy_route(0.5, 0.1, before=90, after=20, seed=4)
    rng = random.Random(5)
    others = {("Peru", "prov-2"): (100, 0.5), ("Chile", "prov-1"): (100, 0.5)}
    series += minutes(rng, {PAIR: (100, 0.5), **others}, 30)
    alerts = run(Detector(HOUR_BASELINE), series)
    assert [a.state for a in alerts] == ["raised", "cleared"]
    raised, cleared = alerts
    recovery = START + 110 * 60
    # The last 5 minutes' ASR passes threshold + 5 after about 3 good minutes, then 5 boundaries in a row.
    assert recovery + 6 * 60 <= cleared.detected_at <= recovery + 9 * 60
    assert cleared.incident == raised.incident and cleared.threshold == raised.threshold
    assert cleared.window_end - cleared.window_start == 5 * 60 and cleared.asr >= raised.threshold + 5


def test_recovery_short_of_the_hysteresis_margin_does_not_clear() -> None:
    series = busy_route(0.5, 0.1, before=90, after=10, seed=6)
    alerts = run(Detector(HOUR_BASELINE), series)
    threshold = alerts[0].threshold / 100
    rng = random.Random(7)
    others = {("Peru", "prov-2"): (100, 0.5), ("Chile", "prov-1"): (100, 0.5)}
    # Hovering just above the threshold, below threshold + 5: no clear, and no second raise.
    hovering = minutes(rng, {PAIR: (300, threshold + 0.02), **others}, 60)
    detector = Detector(HOUR_BASELINE)
    assert [a.state for a in run(detector, series + hovering)] == ["raised"]


def test_the_threshold_is_frozen_so_a_long_outage_does_not_clear_itself() -> None:
    # The outage outlasts the 60-minute baseline: a moving threshold would sink to ~-10 %.
    series = busy_route(0.5, 0.1, before=90, after=240, seed=8)
    detector = Detector(HOUR_BASELINE)
    assert [a.state for a in run(detector, series)] == ["raised"]
    assert detector.states[PAIR].raised is not None


def test_without_enough_baseline_only_the_floor_applies() -> None:
    rng = random.Random(9)
    at_ten_percent = minutes(rng, {PAIR: (100, 0.1)}, 10)
    assert run(Detector(HOUR_BASELINE), at_ten_percent) == []  # no baseline, floor 0: nothing to compare
    with_floor = parse_rules("[detector]\nbaseline_minutes = 60\n[defaults]\nfloor = 30\n", "test")
    alerts = run(Detector(with_floor), at_ten_percent)
    assert [(a.key, a.state, a.baseline_asr, a.threshold, a.detected_at) for a in alerts] == [
        (key, "raised", None, 30.0, START + 60) for key in (("Peru", None), PAIR)
    ]


def test_the_floor_raises_even_when_the_baseline_is_just_as_low() -> None:
    rules = parse_rules("[detector]\nbaseline_minutes = 60\n[defaults]\nfloor = 25\n", "test")
    alerts = run(Detector(rules), busy_route(0.12, 0.12, before=90, after=0, seed=10))
    assert [(a.key, a.state, a.threshold) for a in alerts] == [(PAIR, "raised", 25.0)]


def test_low_volume_noise_raises_nothing() -> None:
    """240 keys with 30-45 attempts per 15 minutes each, at their own steady ASR: 4 hours, no alert."""
    rng = random.Random(11)
    detector = Detector(HOUR_BASELINE)
    keys = [(f"Country {d}", f"prov-{p}") for d in range(60) for p in range(4)]
    asr = {key: rng.uniform(0.2, 0.7) for key in keys}
    alerts: list[Alert] = []
    for index in range(240):
        pairs: dict[tuple[str, str], tuple[int, int]] = {}
        for key in keys:
            attempts = rng.randint(2, 3)
            pairs[key] = (attempts, sum(rng.random() < asr[key] for _ in range(attempts)))
        alerts.extend(detector.step(START + index * 60, pairs))
    assert alerts == []


def test_a_disabled_key_never_alerts() -> None:
    rules = parse_rules(
        '[detector]\nbaseline_minutes = 60\n[destinations."Peru".providers."prov-1"]\nenabled = false\n', "t"
    )
    assert run(Detector(rules), busy_route(0.5, 0.1, before=90, after=30)) == []


def test_the_incidents_own_bad_minutes_do_not_raise_it_again_after_the_clear() -> None:
    # A partial recovery: from 10 % to 45 % (threshold ~30, + 5 = 35 to clear). Right after the
    # clear, the 15-minute suffix still holds bad minutes; they must not count again.
    series = busy_route(0.5, 0.1, before=90, after=30, seed=12)
    rng = random.Random(13)
    others = {("Peru", "prov-2"): (100, 0.5), ("Chile", "prov-1"): (100, 0.5)}
    series += minutes(rng, {PAIR: (100, 0.45), **others}, 40)
    assert [a.state for a in run(Detector(HOUR_BASELINE), series)] == ["raised", "cleared"]


def test_replay_and_restart_give_the_same_alerts_at_the_same_event_times() -> None:
    series = busy_route(0.5, 0.1, before=90, after=20, seed=14)
    series += minutes(random.Random(15), {PAIR: (100, 0.5)}, 30)
    straight = run(Detector(HOUR_BASELINE), series)
    assert run(Detector(HOUR_BASELINE), series) == straight
    assert [a.state for a in straight] == ["raised", "cleared"]
    # Restart at every minute between raise and clear: state from its records, series rebuilt.
    span = HOUR_BASELINE.detector.span_minutes
    for cut in range(95, 120, 4):
        first = Detector(HOUR_BASELINE)
        before = run(first, series[:cut])
        records = {key: KeyState.from_record(state.record()) for key, state in first.states.items()}
        second = Detector(HOUR_BASELINE, records)
        for pairs in series[max(0, cut - span) : cut]:
            second.series.push(pairs)
        assert before + run(second, series[cut:], START + cut * 60) == straight, cut


def test_rolling_series_keeps_exact_baseline_sums_and_a_zero_filled_window() -> None:
    series = RollingSeries(window_minutes=3, baseline_minutes=4)
    pushed = [{PAIR: (n, n // 2)} if n % 3 else {} for n in range(1, 20)]
    for index, pairs in enumerate(pushed):
        series.push(pairs)
        window = [pushed[i].get(PAIR, (0, 0)) for i in range(index - 2, index + 1) if i >= 0]
        window = [(0, 0)] * (3 - len(window)) + window
        baseline = [pushed[i].get(PAIR, (0, 0)) for i in range(index - 6, index - 2) if i >= 0]
        expected_window = ([a for a, _ in window], [c for _, c in window])
        got = series.window().get(PAIR, {ATTEMPTS: [0, 0, 0], CONNECTED: [0, 0, 0]})
        assert (got[ATTEMPTS], got[CONNECTED]) == expected_window
        assert series.baseline(PAIR)[:2] == [sum(a for a, _ in baseline), sum(c for _, c in baseline)]
        assert series.baseline(("Peru", None)) == series.baseline(PAIR)  # the only provider
    assert series.baseline(("Nowhere", None)) == empty()


def test_destination_totals_sum_the_providers() -> None:
    pairs = {("Peru", "a"): (10, 4), ("Peru", "b"): (5, 1), ("Chile", "a"): (3, 3), ("Chile", "b"): (0, 0)}
    assert with_destination_totals(pairs) == {
        ("Peru", "a"): (10, 4),
        ("Peru", "b"): (5, 1),
        ("Chile", "a"): (3, 3),
        ("Peru", None): (15, 5),
        ("Chile", None): (3, 3),
    }


def test_the_alert_document() -> None:
    alerts = run(Detector(HOUR_BASELINE), busy_route(0.5, 0.1, before=90, after=2))
    document = alerts[0].document(emitted_at_ms=1_795_606_330_123)
    assert document == {
        "key": '["Peru","prov-1"]',
        "incident": alerts[0].incident,
        "metric": "asr",
        "destination": "Peru",
        "provider": "prov-1",
        "state": "raised",
        "value": alerts[0].asr,
        "baseline": alerts[0].baseline_asr,
        "grown_causes": [],  # the CDRs carried no SIP codes
        "asr": alerts[0].asr,
        "baseline_asr": alerts[0].baseline_asr,
        "threshold": alerts[0].threshold,
        "attempts": 100,
        "window_start": "2026-11-25T11:30:00Z",
        "window_end": "2026-11-25T11:31:00Z",
        "detected_at": "2026-11-25T11:31:00Z",
        "emitted_at": "2026-11-25T11:32:10.123Z",
    }
    assert len(alerts[0].incident) == 16
    assert Alert.from_record(alerts[0].record()) == alerts[0]


@pytest.mark.parametrize(
    ("marks", "ends", "expected"),
    [
        ({0: (5_000, 9), 1: (3_000, 4)}, {0: 20, 1: 30}, 3_000),  # the slowest partition decides
        ({0: (5_000, 9), 1: (3_000, 4)}, {0: 20, 1: 5}, 5_000),  # ...unless all it has is mirrored
        ({0: (5_000, 19), 1: (3_000, 4)}, {0: 20, 1: 5}, 5_000),  # all idle: the newest stream time
        ({0: (5_000, 9)}, {0: 20, 1: 0}, 5_000),  # a partition that never had a message
        ({0: (5_000, 9)}, {0: 20, 1: 3}, None),  # one with messages no flush has covered yet
        ({}, {0: 0, 1: 0}, None),
    ],
)
def test_effective_watermark(
    marks: dict[int, tuple[int, int]], ends: dict[int, int], expected: int | None
) -> None:
    assert effective_watermark(marks, ends) == expected


def test_due_minutes_are_consecutive_settled_and_bounded() -> None:
    boundary_ms = (START + 600) * 1000
    assert due_minutes(START, boundary_ms - 1, 0, 60) == list(range(START, START + 540, 60))
    assert due_minutes(START, boundary_ms, 0, 60) == list(range(START, START + 600, 60))
    assert due_minutes(START, boundary_ms, 120, 60) == list(range(START, START + 480, 60))
    assert due_minutes(START, boundary_ms, 0, 3) == [START, START + 60, START + 120]
    assert due_minutes(START + 600, boundary_ms, 0, 60) == []


def test_a_minute_may_be_due_once_the_newest_mark_has_passed_its_end_and_the_settling() -> None:
    end_ms = (START + 60) * 1000
    assert not may_be_due(START, {0: (end_ms + 29_999, 5), 1: (START * 1000, 9)}, 30)
    assert may_be_due(START, {0: (end_ms + 30_000, 5), 1: (START * 1000, 9)}, 30)
    assert not may_be_due(START, {}, 0)


def test_no_minute_is_due_while_the_marks_alone_say_none_can_be() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        next_minute = START + rng.randrange(0, 600, 60)
        marks = {
            p: (START * 1000 + rng.randrange(0, 900_000), rng.randrange(0, 50))
            for p in range(rng.randrange(4))
        }
        ends = {p: rng.randrange(0, 60) for p in range(4)}
        settle = rng.choice([0, 30, 120])
        watermark = effective_watermark(marks, ends)
        due = watermark is not None and due_minutes(next_minute, watermark, settle, 10)
        assert may_be_due(next_minute, marks, settle) or not due
