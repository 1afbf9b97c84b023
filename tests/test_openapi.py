"""docs/openapi.json is the API reference: it must be what the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from api.app import create_app
from breakout.settings import load_settings

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def current_spec() -> str:
    return json.dumps(create_app(load_settings()).openapi(), indent=2, sort_keys=True) + "\n"


def test_committed_openapi_matches_the_app() -> None:
    assert SPEC.read_text() == current_spec(), "regenerate: python -m tests.test_openapi"


if __name__ == "__main__":
    SPEC.write_text(current_spec())
