"""The alert rules file: defaults, overrides from general to specific, one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from breakout.errors import ConfigError
from breakout.noc.rules import METRICS, DetectorConfig, Rule, check_retention, load_rules, parse_rules

EXAMPLE = """
[detector]
window_minutes = 15
baseline_minutes = 60
settle_seconds = 0

[defaults]
min_attempts = 40
floor = 5

[providers."prov-1"]
drop_points = 30

[destinations."Germany"]
drop_points = 25
floor = 10

[destinations."Germany".providers."prov-1"]
enabled = false

[destinations."France".providers."prov-2"]
hysteresis_points = 8.5
"""


def test_no_file_means_the_built_in_defaults() -> None:
    rules = load_rules(None)
    assert rules.detector == DetectorConfig(True, 15, 1440, 120)
    assert rules.rule_for(("Anywhere", "p")) == Rule(True, 30, 20.0, 0.0, 5.0, 5, 3.0)


def test_overrides_resolve_from_general_to_specific(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(EXAMPLE)
    rules = load_rules(path)
    assert rules.detector == DetectorConfig(True, 15, 60, 0)
    base = Rule(min_attempts=40, floor=5.0)
    assert rules.rule_for(("Spain", "prov-9")) == base
    assert rules.rule_for(("Spain", "prov-1")) == Rule(min_attempts=40, floor=5.0, drop_points=30.0)
    assert rules.rule_for(("Spain", None)) == base  # destination-wide keys take no provider overrides
    # the destination's table beats the provider's; the pair's table beats both
    assert rules.rule_for(("Germany", None)) == Rule(min_attempts=40, floor=10.0, drop_points=25.0)
    assert rules.rule_for(("Germany", "prov-1")) == Rule(False, 40, 25.0, 10.0)
    assert rules.rule_for(("Germany", "prov-2")) == Rule(min_attempts=40, floor=10.0, drop_points=25.0)
    assert rules.rule_for(("France", "prov-2")) == Rule(min_attempts=40, floor=5.0, hysteresis_points=8.5)


def test_every_metric_is_on_by_default_and_each_is_switched_alone() -> None:
    rules = parse_rules(
        """
[defaults]
ner_enabled = true
pdd_enabled = true
pdd_rise_ms = 800

[providers."prov-1"]
pdd_enabled = false

[destinations."Peru"]
asr_enabled = false
ner_drop_points = 10
pdd_ceiling_ms = 9000
""",
        "rules.toml",
    )
    assert [load_rules(None).rule_for(("Anywhere", "p")).watches(m) for m in METRICS] == [True, True, True]
    assert [rules.rule_for(("Chile", "prov-2")).watches(m) for m in METRICS] == [True, True, True]
    assert [rules.rule_for(("Chile", "prov-1")).watches(m) for m in METRICS] == [True, True, False]
    assert [rules.rule_for(("Peru", None)).watches(m) for m in METRICS] == [False, True, True]
    peru = rules.rule_for(("Peru", "prov-1"))
    assert (peru.ner_drop_points, peru.pdd_rise_ms, peru.pdd_ceiling_ms, peru.pdd_enabled) == (
        10.0,
        800,
        9000,
        False,
    )
    off = parse_rules('[defaults]\nner_enabled = true\n[destinations."Peru"]\nenabled = false\n', "r.toml")
    assert not any(off.rule_for(("Peru", None)).watches(m) for m in METRICS)  # enabled = false: all of them


def test_a_rules_file_from_before_ner_and_pdd_keeps_its_asr_rules(tmp_path: Path) -> None:
    """Its ASR thresholds hold as written; NER and PDD come with their defaults, on."""
    path = tmp_path / "rules.toml"
    path.write_text(EXAMPLE)
    for key in [("Spain", "prov-1"), ("Germany", None), ("Germany", "prov-1"), ("France", "prov-2")]:
        rule = load_rules(path).rule_for(key)
        assert rule.pdd_enabled is rule.ner_enabled is True and rule.asr_enabled
        assert rule.watches("asr") is rule.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults\n", "rules.toml: not valid TOML: "),
        ("[alerts]\n", "rules.toml: alerts: unknown key (expected one of: defaults, destinations, detector"),
        ("[defaults]\ndrop_point = 20\n", "rules.toml: defaults.drop_point: unknown key (expected one of: "),
        ("[defaults]\ndrop_points = 'a lot'\n", "rules.toml: defaults.drop_points: expected ASR percentage"),
        ("[defaults]\ndrop_points = 0\n", "rules.toml: defaults.drop_points: expected ASR percentage points"),
        ("[defaults]\nfloor = 100\n", "rules.toml: defaults.floor: expected an ASR in percent"),
        ("[defaults]\nmin_attempts = 2.5\n", "rules.toml: defaults.min_attempts: expected a whole number"),
        ("[defaults]\nmin_attempts = true\n", "rules.toml: defaults.min_attempts: expected a whole number"),
        ("[defaults]\nenabled = 1\n", "rules.toml: defaults.enabled: expected true or false, got 1"),
        ("defaults = 3\n", "rules.toml: defaults: expected a table, got 3"),
        ("[detector]\nwindow_minutes = 0\n", "rules.toml: detector.window_minutes: expected a whole number"),
        ("[detector]\nbaseline_minutes = 20000\n", "rules.toml: detector.baseline_minutes: expected"),
        (
            "[detector]\nfloor = 3\n",
            "rules.toml: detector.floor: unknown key (expected one of: baseline_minutes",
        ),
        (
            "[defaults]\nclear_minutes = 20\n",
            "rules.toml: defaults.clear_minutes: 20 is longer than detector.window_minutes (15)",
        ),
        (
            '[destinations."Peru".providers."p 1"]\nclear_minutes = 16\n',
            'rules.toml: destinations."Peru".providers."p 1".clear_minutes: 16 is longer than',
        ),
        ('[providers]\n"prov-1" = 5\n', 'rules.toml: providers."prov-1": expected a table, got 5'),
        (
            '[destinations."Peru"]\nflor = 5\n',
            'rules.toml: destinations."Peru".flor: unknown key (expected one',
        ),
        (
            '[destinations."Peru"]\nproviders = []\n',
            'rules.toml: destinations."Peru".providers: expected a table',
        ),
        ('[destinations.""]\nfloor = 5\n', "rules.toml: destinations: a name must not be empty"),
        ("[defaults]\nner_enabled = 'yes'\n", "rules.toml: defaults.ner_enabled: expected true or false"),
        (
            "[defaults]\nner_drop_points = 0\n",
            "rules.toml: defaults.ner_drop_points: expected NER percentage",
        ),
        ("[defaults]\npdd_min_calls = 0\n", "rules.toml: defaults.pdd_min_calls: expected a whole number"),
        ("[defaults]\npdd_rise_ms = 1.5\n", "rules.toml: defaults.pdd_rise_ms: expected whole milliseconds"),
        (
            "[defaults]\npdd_rise_ratio = 0.9\n",
            "rules.toml: defaults.pdd_rise_ratio: expected a ratio from 1",
        ),
        (
            '[providers."p"]\npdd_ceiling_ms = -1\n',
            'rules.toml: providers."p".pdd_ceiling_ms: expected whole milliseconds from 0 (no ceiling)',
        ),
        ("[defaults]\nner_flor = 5\n", "rules.toml: defaults.ner_flor: unknown key (expected one of: "),
    ],
)
def test_each_mistake_is_one_line_naming_file_key_and_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "rules.toml")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the alert rules: "):
        load_rules(tmp_path / "missing.toml")


def test_minute_retention_must_cover_baseline_window_and_settle() -> None:
    rules = parse_rules("[detector]\nbaseline_minutes = 60\nsettle_seconds = 30\n", "r.toml")
    check_retention(rules, 75 * 60 + 30)
    with pytest.raises(ConfigError) as caught:
        check_retention(rules, 75 * 60 + 29)
    assert str(caught.value).startswith("BREAKOUT_MINUTE_RETENTION=4529: shorter than the alert detector's")
    check_retention(parse_rules("[detector]\nenabled = false\nbaseline_minutes = 60\n", "r.toml"), 60)
    check_retention(load_rules(None), 48 * 3600)  # the defaults fit the default retention
