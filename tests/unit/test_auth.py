"""API keys: only digests in settings; roles parse strictly."""

from __future__ import annotations

import pytest

from breakout.auth import ADMIN, Role, key_entry, new_key, parse_key_entries, parse_role, role_of
from breakout.errors import ConfigError
from breakout.settings import load_settings


def test_a_created_key_maps_to_its_role_and_is_not_in_its_entry() -> None:
    key = new_key()
    entry = key_entry(key, Role("acme"))
    assert key not in entry and key.startswith("bk_") and len(key) > 40
    roles = parse_key_entries(f" {entry} , {key_entry(other := new_key(), ADMIN)},")
    assert role_of(key, roles) == Role("acme") and role_of(other, roles) == ADMIN
    assert role_of(new_key(), roles) is None


@pytest.mark.parametrize(
    ("text", "role"), [("admin", ADMIN), ("customer:acme", Role("acme")), ("customer:a:b", Role("a:b"))]
)
def test_roles(text: str, role: Role) -> None:
    assert parse_role(text) == role and str(role) == text


@pytest.mark.parametrize("text", ["root", "customer:", "customer", "Admin", "customer: a", "customer:a,b"])
def test_bad_roles(text: str) -> None:
    with pytest.raises(ValueError, match="customer"):
        parse_role(text)


@pytest.mark.parametrize("entries", ["admin", "abc:admin", "g" * 64 + ":admin", "a" * 64 + ":boss"])
def test_bad_settings_stop_start_up_with_one_line(entries: str) -> None:
    with pytest.raises(ConfigError, match="BREAKOUT_API_KEYS"):
        load_settings(api_keys=entries)
