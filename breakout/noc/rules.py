"""NOC alert rules: a TOML file of detector settings, default thresholds and overrides.

The file is read once at start-up and every problem is reported as one ``ConfigError``
line naming the file, the key and what is wrong, so a typo in a threshold stops the
worker instead of silently never alerting. Thresholds resolve from the most general
table to the most specific: ``[defaults]``, ``[providers."P"]``, ``[destinations."D"]``,
``[destinations."D".providers."P"]``. Every table holds the thresholds of all three
metrics (ASR, NER, PDD), so one override can tune or switch off one metric of a route.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from breakout.errors import ConfigError

# Builds the error for a key path (``defaults.floor``) and a problem.
_Fail = Callable[[str, str], ConfigError]

# A detector key: a destination with one provider, or with None for all providers together.
AlertKey = tuple[str, str | None]
# What an alert is about: answer-seizure ratio, network effectiveness ratio, post-dial delay.
Metric = Literal["asr", "ner", "pdd"]
METRICS: tuple[Metric, ...] = ("asr", "ner", "pdd")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detector as a whole (the ``[detector]`` table)."""

    enabled: bool = True
    window_minutes: int = 15
    baseline_minutes: int = 1440
    settle_seconds: int = 120

    @property
    def span_minutes(self) -> int:
        """Minutes of history one evaluation needs: the baseline and the recent window."""
        return self.window_minutes + self.baseline_minutes


@dataclass(frozen=True)
class Rule:
    """The thresholds of one key (``[defaults]`` and every override table).

    ``enabled`` switches the key off altogether, ``<metric>_enabled`` one metric of it.
    NER and PDD are off unless turned on, so that upgrading changes nobody's alerts.
    ``min_attempts``, ``clear_minutes`` and ``z`` apply to every metric; the unprefixed
    drop, floor and hysteresis are ASR's (their names from before the other metrics).
    """

    enabled: bool = True
    min_attempts: int = 30
    drop_points: float = 20.0
    floor: float = 0.0
    hysteresis_points: float = 5.0
    clear_minutes: int = 5
    z: float = 3.0
    asr_enabled: bool = True
    ner_enabled: bool = True
    ner_drop_points: float = 20.0
    ner_floor: float = 0.0
    ner_hysteresis_points: float = 5.0
    pdd_enabled: bool = True
    pdd_min_calls: int = 30
    pdd_rise_ms: int = 1000
    pdd_rise_ratio: float = 1.5
    pdd_ceiling_ms: int = 0
    pdd_hysteresis_ms: int = 500

    def watches(self, metric: Metric) -> bool:
        """Whether ``metric`` of this key may raise (and clear)."""
        switches = {"asr": self.asr_enabled, "ner": self.ner_enabled, "pdd": self.pdd_enabled}
        return self.enabled and switches[metric]


# Each key: (type check, bounds check, what a valid value looks like).
_Check = tuple[type, float, float, str]
_DETECTOR: dict[str, _Check] = {
    "enabled": (bool, 0, 1, "true or false"),
    "window_minutes": (int, 1, 180, "a whole number of minutes from 1 to 180"),
    "baseline_minutes": (int, 1, 10080, "a whole number of minutes from 1 to 10080 (7 days)"),
    "settle_seconds": (int, 0, 3600, "a whole number of seconds from 0 to 3600"),
}
_RULE: dict[str, _Check] = {
    "enabled": (bool, 0, 1, "true or false"),
    "min_attempts": (int, 1, 1_000_000, "a whole number of attempts, at least 1"),
    "drop_points": (float, 0.01, 100, "ASR percentage points, more than 0 and at most 100"),
    "floor": (float, 0, 99.99, "an ASR in percent, at least 0 and below 100"),
    "hysteresis_points": (float, 0, 100, "ASR percentage points from 0 to 100"),
    "clear_minutes": (int, 1, 180, "a whole number of minutes, at least 1 and at most window_minutes"),
    "z": (float, 0.5, 10, "a z-score from 0.5 to 10"),
    "asr_enabled": (bool, 0, 1, "true or false"),
    "ner_enabled": (bool, 0, 1, "true or false"),
    "ner_drop_points": (float, 0.01, 100, "NER percentage points, more than 0 and at most 100"),
    "ner_floor": (float, 0, 99.99, "an NER in percent, at least 0 and below 100"),
    "ner_hysteresis_points": (float, 0, 100, "NER percentage points from 0 to 100"),
    "pdd_enabled": (bool, 0, 1, "true or false"),
    "pdd_min_calls": (int, 1, 1_000_000, "a whole number of calls, at least 1"),
    "pdd_rise_ms": (int, 0, 600_000, "whole milliseconds from 0 to 600000"),
    "pdd_rise_ratio": (float, 1, 100, "a ratio from 1 (no ratio) to 100"),
    "pdd_ceiling_ms": (int, 0, 600_000, "whole milliseconds from 0 (no ceiling) to 600000"),
    "pdd_hysteresis_ms": (int, 0, 600_000, "whole milliseconds from 0 to 600000"),
}


class Rules:
    """The validated rules: the detector settings and each key's resolved thresholds."""

    def __init__(
        self,
        detector: DetectorConfig = DetectorConfig(),
        defaults: Rule = Rule(),
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        destinations: Mapping[str, Mapping[str, Any]] | None = None,
        pairs: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.detector = detector
        self.defaults = defaults
        self._providers = dict(providers or {})
        self._destinations = dict(destinations or {})
        self._pairs = dict(pairs or {})
        self._resolved: dict[AlertKey, Rule] = {}

    def rule_for(self, key: AlertKey) -> Rule:
        """The thresholds of ``key``; destination-wide keys take no provider overrides."""
        rule = self._resolved.get(key)
        if rule is None:
            destination, provider = key
            rule = self.defaults
            if provider is not None:
                rule = replace(rule, **self._providers.get(provider, {}))
            rule = replace(rule, **self._destinations.get(destination, {}))
            if provider is not None:
                rule = replace(rule, **self._pairs.get((destination, provider), {}))
            self._resolved[key] = rule
        return rule


def load_rules(path: Path | None) -> Rules:
    """The rules in the TOML file at ``path`` (None: the built-in defaults), or ``ConfigError``."""
    if path is None:
        return Rules()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the alert rules: {exc}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str) -> Rules:
    """Validate the rules document ``text``; ``source`` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None

    def fail(where: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {where}: {problem}")

    _known(document, {"detector", "defaults", "providers", "destinations"}, "", fail)
    detector = DetectorConfig(**_values(_table(document, "detector", "", fail), _DETECTOR, "detector", fail))
    defaults = Rule(**_values(_table(document, "defaults", "", fail), _RULE, "defaults", fail))
    providers = {
        name: _values(table, _RULE, f"providers.{_quote(name)}", fail)
        for name, table in _tables(document, "providers", "", fail).items()
    }
    destinations: dict[str, dict[str, Any]] = {}
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for name, table in _tables(document, "destinations", "", fail).items():
        where = f"destinations.{_quote(name)}"
        own = {k: v for k, v in table.items() if k != "providers"}
        destinations[name] = _values(own, _RULE, where, fail)
        for provider, pair in _tables(table, "providers", where + ".", fail).items():
            pairs[(name, provider)] = _values(pair, _RULE, f"{where}.providers.{_quote(provider)}", fail)
    overlays = {"defaults": {}, **{f"providers.{_quote(n)}": v for n, v in providers.items()}}
    overlays |= {f"destinations.{_quote(n)}": v for n, v in destinations.items()}
    overlays |= {f"destinations.{_quote(d)}.providers.{_quote(p)}": v for (d, p), v in pairs.items()}
    for where, overlay in overlays.items():
        clear_minutes = overlay.get("clear_minutes", defaults.clear_minutes)
        if clear_minutes > detector.window_minutes:
            where = where if "clear_minutes" in overlay else "defaults"
            raise fail(
                f"{where}.clear_minutes",
                f"{clear_minutes} is longer than detector.window_minutes ({detector.window_minutes})",
            )
    return Rules(detector, defaults, providers, destinations, pairs)


def check_retention(rules: Rules, minute_retention: int) -> None:
    """Refuse a minute retention too short for the detector to rebuild its history after a restart."""
    detector = rules.detector
    needed = detector.span_minutes * 60 + detector.settle_seconds
    if detector.enabled and minute_retention < needed:
        raise ConfigError(
            f"BREAKOUT_MINUTE_RETENTION={minute_retention}: shorter than the alert detector's "
            f"baseline + window + settle time ({needed} s); raise it or shorten detector.baseline_minutes"
        )


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _known(table: Mapping[str, Any], allowed: set[str], prefix: str, fail: _Fail) -> None:
    for key in table:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            raise fail(f"{prefix}{key}", f"unknown key (expected one of: {expected})")


def _table(parent: Mapping[str, Any], name: str, prefix: str, fail: _Fail) -> dict[str, Any]:
    value = parent.get(name, {})
    if not isinstance(value, dict):
        raise fail(f"{prefix}{name}", f"expected a table, got {_show(value)}")
    return value


def _tables(parent: Mapping[str, Any], name: str, prefix: str, fail: _Fail) -> dict[str, dict[str, Any]]:
    """A table of named tables (``[providers."P"]``): each entry must be a table itself."""
    tables = _table(parent, name, prefix, fail)
    for key, value in tables.items():
        if not key:
            raise fail(f"{prefix}{name}", "a name must not be empty")
        if not isinstance(value, dict):
            raise fail(f"{prefix}{name}.{_quote(key)}", f"expected a table, got {_show(value)}")
    return tables


def _values(table: Mapping[str, Any], checks: dict[str, _Check], where: str, fail: _Fail) -> dict[str, Any]:
    """``table``'s keys checked against ``checks``: known, of the right type, within bounds."""
    allowed = set(checks) | ({"providers"} if where.startswith("destinations.") else set())
    _known(table, allowed, where + ".", fail)
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind, low, high, expected = checks[key]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
            value = float(value) if ok else value
        if not ok:
            raise fail(f"{where}.{key}", f"expected {expected}, got {_show(value)}")
        values[key] = value
    return values


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
