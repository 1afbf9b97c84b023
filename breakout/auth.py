"""API keys and the role each grants; settings hold only their SHA-256 digests.

A key is 32 random bytes handed to a person once (``breakout api-key``); the settings
keep ``<sha256 hex>:<role>`` entries, so a leaked configuration grants nothing. SHA-256
rather than a password hash (argon2, bcrypt): a key is not a human-chosen password, there
is nothing to brute-force in 256 random bits, and a slow hash would tax every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "bk_"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Role:
    """``admin`` sees everything; a customer role (``customer:<id>``) sees one account."""

    customer: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.customer is None

    def __str__(self) -> str:
        return "admin" if self.customer is None else f"customer:{self.customer}"


ADMIN = Role()


def parse_role(text: str) -> Role:
    """``admin`` or ``customer:<id>``; raises ValueError with what was expected."""
    if text == "admin":
        return ADMIN
    kind, _, customer = text.partition(":")
    if kind != "customer" or not customer:
        raise ValueError(f"a role is `admin` or `customer:<id>`, got {text!r}")
    if "," in customer or customer != customer.strip():
        raise ValueError(f"a customer id in a role cannot hold commas or edge spaces, got {customer!r}")
    return Role(customer)


def new_key() -> str:
    """A fresh API key: the prefix makes it recognisable in a leaked log or paste."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_entry(key: str, role: Role) -> str:
    """What goes into ``BREAKOUT_API_KEYS`` for ``key``."""
    return f"{digest(key)}:{role}"


def parse_key_entries(text: str) -> dict[str, Role]:
    """``BREAKOUT_API_KEYS``: comma-separated ``<sha256 hex>:<role>`` entries → digest → role."""
    roles: dict[str, Role] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        hexdigest, _, role = entry.partition(":")
        if len(hexdigest) != 64 or not _HEX.issuperset(hexdigest):
            raise ValueError(
                f"an entry is `<sha256 hex>:<role>` as printed by `breakout api-key`, got {entry[:80]!r}"
            )
        roles[hexdigest] = parse_role(role)
    return roles


def role_of(key: str, roles: dict[str, Role]) -> Role | None:
    """The role ``key`` grants, or None for an unknown key."""
    return roles.get(digest(key))
