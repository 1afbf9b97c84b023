"""What the detector keeps in Redis: read back exactly, and read when written before NER and PDD."""

from __future__ import annotations

import hashlib
import random

import orjson
import pytest

from breakout.aggregate import ATTEMPTS, CONNECTED, EFFECTIVE, PDD_CALLS, PDD_MS, empty, sip_slot
from breakout.noc.alert import Alert, incident_id, parse_subject, subject_of, subject_text
from breakout.noc.detector import Detector, KeyState
from breakout.noc.minutes import decode_minute, encode_minute
from tests.unit.test_noc_metrics import ALL_ON, NORMAL, OUTAGE, START, A, minutes, run, steady

PERU = ("Peru", "prov-1")


def test_subjects_asr_keeps_the_bare_key_so_its_fields_and_incident_ids_are_unchanged() -> None:
    assert subject_text(subject_of("asr", PERU)) == '["Peru","prov-1"]'
    assert subject_text(subject_of("ner", ("Peru", None))) == '["Peru",null,"ner"]'
    for metric in ("asr", "ner", "pdd"):
        for key in (PERU, ("Peru", None)):
            subject = subject_of(metric, key)
            assert parse_subject(subject_text(subject).encode()) == subject
    # The id an ASR incident raised at this time had before NER and PDD existed.
    before = hashlib.sha256(b'["Peru","prov-1"]@1795606260').hexdigest()[:16]
    assert incident_id(subject_of("asr", PERU), 1_795_606_260) == before
    assert incident_id(subject_of("ner", PERU), 1_795_606_260) != before
    for text in ('["Peru"]', '["Peru","p","asr"]', '["Peru","p","mos"]', '{"a":1}'):
        with pytest.raises(ValueError, match="not an alert subject"):
            parse_subject(text)


def test_a_state_recorded_before_ner_and_pdd_loads_and_its_incident_clears_as_asr() -> None:
    field = b'["Andorra","prov-1"]'  # as the state hash held it
    raised_at = START + 91 * 60
    record = {
        "raised": {
            "destination": "Andorra",
            "provider": "prov-1",
            "state": "raised",
            "asr": 5.0,
            "baseline_asr": 50.12,
            "threshold": 30.12,
            "attempts": 60,
            "window_start": raised_at - 60,
            "window_end": raised_at,
            "detected_at": raised_at,
            "incident": "0123456789abcdef",
        },
        "streak": 0,
        "not_before": 0,
    }
    states = {parse_subject(field): KeyState.from_record(orjson.loads(orjson.dumps(record)))}
    raised = states[A].raised
    assert raised is not None and (raised.metric, raised.value, raised.baseline) == ("asr", 5.0, 50.12)
    assert raised.grown_causes == () and raised.pdd_calls is None
    detector = Detector(ALL_ON, states)
    rng = random.Random(9)
    history = minutes(rng, steady(), 80) + minutes(rng, steady(a=(60, OUTAGE, 3000.0)), 11)
    for pairs in history:  # saved by the old version: attempts and connected only
        detector.series.push(
            decode_minute(orjson.dumps([[d, p, c[ATTEMPTS], c[CONNECTED]] for (d, p), c in pairs.items()]))
        )
    cleared = [a for a in run(detector, minutes(rng, steady(), 15), START + 91 * 60) if a.key == A]
    assert [(a.metric, a.state, a.incident, a.threshold) for a in cleared] == [
        ("asr", "cleared", "0123456789abcdef", 30.12)
    ]


def test_a_saved_minute_reads_back_as_the_counters_the_detector_keeps() -> None:
    row = empty()
    row[ATTEMPTS], row[CONNECTED], row[EFFECTIVE], row[PDD_MS], row[PDD_CALLS] = 10, 4, 7, 21_000, 6
    row[sip_slot(200)], row[sip_slot(503)], row[sip_slot(599)] = 4, 3, 1
    row[2] = 123_456  # billed duration: not the detector's, not saved
    raw = encode_minute({PERU: row, ("Chile", "p"): (5, 2)})
    assert orjson.loads(raw) == [
        ["Peru", "prov-1", 10, 4, 7, 21_000, 6, {"200": 4, "503": 3, "5xx": 1}],
        ["Chile", "p", 5, 2, 0, 0, 0, {}],
    ]
    expected = row.copy()
    expected[2] = 0
    assert decode_minute(raw)[PERU] == expected
    old = decode_minute(b'[["Peru","prov-1",10,4]]')  # saved before NER, PDD and SIP codes
    assert old[PERU][:3] == [10, 4, 0] and not any(old[PERU][3:])
    renamed = decode_minute(b'[["Peru","prov-1",10,4,7,0,0,{"505":2,"200":1}]]')  # 505: not in the catalogue
    assert (renamed[PERU][sip_slot(505)], renamed[PERU][sip_slot(200)]) == (2, 1)


def test_restarts_through_the_redis_records_give_the_same_alerts() -> None:
    rng = random.Random(10)
    series = minutes(rng, steady(), 90) + minutes(rng, steady(a=(60, OUTAGE, 3000.0)), 15)
    series += minutes(rng, steady(), 25)
    straight = run(Detector(ALL_ON), series)
    assert sorted({(a.metric, a.state) for a in straight}) == [
        ("asr", "cleared"),
        ("asr", "raised"),
        ("ner", "cleared"),
        ("ner", "raised"),
    ]
    span = ALL_ON.detector.span_minutes
    for cut in range(92, 125, 4):
        first = Detector(ALL_ON)
        before = run(first, series[:cut])
        saved = {subject_text(s): orjson.dumps(state.record()) for s, state in first.states.items()}
        states = {parse_subject(f): KeyState.from_record(orjson.loads(v)) for f, v in saved.items()}
        second = Detector(ALL_ON, states)
        for pairs in series[max(0, cut - span) : cut]:
            second.series.push(decode_minute(encode_minute(pairs)))
        assert before + run(second, series[cut:], START + cut * 60) == straight, cut


def test_ner_and_pdd_alert_documents() -> None:
    rng = random.Random(11)
    series = minutes(rng, {A: (100, NORMAL, 3000.0)}, 90)
    series += minutes(rng, {A: (100, {**OUTAGE, 503: 0.7, 486: 0.22}, 30_000.0)}, 1)
    alerts = {a.metric: a for a in run(Detector(ALL_ON), series) if a.key == A}
    assert sorted(alerts) == ["asr", "ner", "pdd"]
    ner = alerts["ner"].document(emitted_at_ms=1_795_606_330_123)
    assert list(ner) == [
        "key",
        "incident",
        "metric",
        "destination",
        "provider",
        "state",
        "value",
        "baseline",
        "threshold",
        "attempts",
        "asr",
        "baseline_asr",
        "grown_causes",
        "window_start",
        "window_end",
        "detected_at",
        "emitted_at",
    ]
    assert (ner["key"], ner["metric"], ner["state"], ner["attempts"]) == (
        '["Andorra","prov-1"]',
        "ner",
        "raised",
        100,
    )
    assert ner["grown_causes"][0] == {
        "code": "503",
        "label": "Service Unavailable",
        "window_share": ner["grown_causes"][0]["window_share"],
        "baseline_share": ner["grown_causes"][0]["baseline_share"],
        "change_points": ner["grown_causes"][0]["change_points"],
        "window_count": ner["grown_causes"][0]["window_count"],
        "baseline_count": ner["grown_causes"][0]["baseline_count"],
    }
    pdd = alerts["pdd"].document(emitted_at_ms=1_795_606_330_123)
    assert (pdd["metric"], pdd["attempts"], pdd["pdd_calls"]) == ("pdd", 100, 100)
    assert pdd["value"] > pdd["threshold"] > pdd["baseline"] > 3000
    assert len({alert.incident for alert in alerts.values()}) == 3
    assert all(Alert.from_record(orjson.loads(orjson.dumps(a.record()))) == a for a in alerts.values())
