from dataclasses import fields
from pathlib import Path

from breakout.noc.rules import DetectorConfig, Rule, parse_rules
from breakout.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in readme, name


def test_the_alert_rules_example_is_valid_and_shows_every_key_with_its_default() -> None:
    text = (ROOT / "docs" / "noc-alerts.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    rules = parse_rules(example, "docs/noc-alerts.md")
    assert rules.detector == DetectorConfig() and rules.defaults == Rule()
    for name in [f.name for f in fields(DetectorConfig)] + [f.name for f in fields(Rule)]:
        assert f"\n{name} = " in example, name
    assert rules.rule_for(("Germany - Mobile", "prov-7")).enabled is False
