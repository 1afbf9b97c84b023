from pathlib import Path

from breakout.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in readme, name
