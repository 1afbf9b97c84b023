"""Generate ``breakout/data/dial_codes.csv``, the shipped dial-code -> destination table.

Source: the numbering-plan metadata of Google's libphonenumber, as packaged by the
``phonenumbers`` Python library (a dev dependency).  Nothing is downloaded; the output only
depends on the installed ``phonenumbers`` version, so re-running this script is the way to
refresh the table after upgrading it.

Method:

* Every country calling code phonenumbers knows gets a row naming its main region
  (``phonenumbers.region_code_for_country_code``), in English, from the geocoder's locale
  data.  Non-geographic codes (region "001": 800, 808, 870, ...) get a service name.
* Below each calling code, the national-number prefix tree is explored: a prefix is
  classified by asking phonenumbers about synthetic numbers under it, of two kinds: every
  next two digits with a pseudo-random tail, at every possible length of the calling code;
  and every next digit under each literal prefix the metadata's own regular expressions
  spell out (number types, territories' leading digits), so that a small range deep in a
  large one (Guernsey's 1481 in the United Kingdom's 1) cannot go unseen.  The tails are
  seeded by the prefix, so every run writes the same file.
  Each valid number's destination is the region phonenumbers assigns it
  (``region_code_for_number``: this separates e.g. Canada from the United States under +1,
  or Jersey from the United Kingdom under +44) plus `` - Mobile`` when its type is MOBILE.
  Regions whose fixed and mobile patterns coincide (type FIXED_LINE_OR_MOBILE, e.g. the
  United States) therefore get no mobile rows.  A prefix whose numbers all agree becomes a
  leaf; a prefix with no valid number is left free; a mixed one is split into its ten
  children, down to ``MAX_DEPTH`` national digits.  A prefix still mixed there, or mixed
  only by number length (Egypt's 15: fixed at 8-9 digits, mobile at 10), gets the plain
  region name (the main region's if the regions differ too): less specific, not wrong.
  Voicemail access numbers are ignored (they share Italy's mobile prefixes).
* The tree is then written with the fewest rows that give the same longest-prefix answer
  for every valid number: a prefix whose ten children agree is replaced by the parent, a
  row repeating what a shorter prefix already gives is dropped, and free (unallocated)
  ranges take whatever answer needs no row.
* phonenumbers' carrier data (prefixes of ranges allocated to mobile carriers) is used as
  a cross-check only: the script prints how many of those prefixes look up to a mobile row.
  The rest are ranges the metadata itself does not type MOBILE (e.g. India's and Denmark's
  FIXED_LINE_OR_MOBILE ranges), and the metadata is what the table follows.

The generated CSV (``prefix,destination``, sorted by prefix, UTF-8) is committed; operators
who need their own breakout point ``BREAKOUT_DIAL_CODES`` at a CSV of the same shape.

Run: ``.venv/bin/python scripts/gen_dial_codes.py`` (a minute or two; it asks phonenumbers
about a few million numbers).
"""

from __future__ import annotations

import bisect
import csv
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]  # parses the metadata's regexes
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberType, geocoder
from phonenumbers.carrierdata import CARRIER_DATA

OUTPUT = Path(__file__).resolve().parent.parent / "breakout" / "data" / "dial_codes.csv"

# Deepest national prefix explored.  Numbering plans separate mobile from fixed (and
# territories sharing a calling code) within the first few national digits; deeper splits
# fall back to the region name, which is correct, only less specific.
MAX_DEPTH = 6

DIGITS = "0123456789"

# The number descriptions of a region's metadata: their patterns decide the number type.
NUMBER_DESCS = (
    "general_desc",
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)

MOBILE_SUFFIX = " - Mobile"

# The geocoder's locale data has no English name for these regions.
REGION_NAMES = {"AC": "Ascension Island", "TA": "Tristan da Cunha", "XK": "Kosovo"}

# Region "001" (non-geographic) calling codes: ITU service names.
NON_GEO_NAMES = {
    800: "International Freephone",
    808: "International Shared Cost Service",
    870: "Inmarsat",
    878: "Universal Personal Telecommunications",
    881: "Global Mobile Satellite System",
    882: "International Networks",
    883: "International Networks",
    888: "UN OCHA Disaster Relief",
    979: "International Premium Rate Service",
}

# Number types treated like invalid numbers: voicemail access numbers share their prefixes
# with the mobile numbers they serve (Italy's 3xx) and are no call destination of their own.
IGNORED_TYPES = frozenset({PhoneNumberType.UNKNOWN, PhoneNumberType.VOICEMAIL})

# A subtree: a destination, None for "no valid number here", or the ten children by digit.
Node = str | None | list["Node"]


def region_name(region: str) -> str:
    """English name of a region, so the table reads like a carrier's rate sheet."""
    name = REGION_NAMES.get(region) or geocoder._region_display_name(region, "en")
    if not name:
        raise SystemExit(f"no English name for region {region}; add it to REGION_NAMES")
    return str(name)


def main_name(cc: int) -> str:
    """Name of a calling code's main region: what its bare calling-code row says."""
    region = phonenumbers.region_code_for_country_code(cc)
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        if cc not in NON_GEO_NAMES:
            raise SystemExit(f"no name for non-geographic calling code {cc}; add it to NON_GEO_NAMES")
        return NON_GEO_NAMES[cc]
    return region_name(region)


def metadata(cc: int, region: str) -> PhoneMetadata:
    """Metadata of one region, or of the non-geographic entity behind a calling code."""
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        meta = PhoneMetadata.metadata_for_nongeo_region(cc)
    else:
        meta = PhoneMetadata.metadata_for_region(region)
    if meta is None:
        raise SystemExit(f"phonenumbers has no metadata for {region} (+{cc})")
    return meta


@cache
def possible_lengths(cc: int) -> tuple[int, ...]:
    """National-number lengths any region of the calling code allows: the lengths to sample."""
    lengths: set[int] = set()
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]:
        general = metadata(cc, region).general_desc
        lengths.update(general.possible_length if general else ())
    return tuple(sorted(lengths))


def phone_number(cc: int, national: str) -> PhoneNumber:
    """A PhoneNumber for digits that may start with zeros (as Italian numbers do)."""
    zeros = len(national) - len(national.lstrip("0"))
    number = PhoneNumber(country_code=cc, national_number=int(national))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros if national.strip("0") else zeros - 1
    return number


def destination(cc: int, national: str) -> str | None:
    """Destination of one number as phonenumbers sees it; None when it is not a valid number."""
    number = phone_number(cc, national)
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return None
    kind = phonenumbers.number_type(number)
    if kind in IGNORED_TYPES:
        return None
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return NON_GEO_NAMES[cc]
    name = region_name(region)
    return name + MOBILE_SUFFIX if kind == PhoneNumberType.MOBILE else name


def random_digits(rng: random.Random, count: int) -> str:
    """A pseudo-random tail for a sample number: the digits after the ones being probed."""
    return "".join(rng.choice(DIGITS) for _ in range(count))


def samples(cc: int, prefix: str) -> Iterator[str]:
    """Synthetic national numbers under a prefix: every next two digits at every length.

    The tail after those two digits is pseudo-random but seeded by the prefix, so the
    output is the same on every run.
    """
    rng = random.Random(f"{cc}:{prefix}")
    for length in possible_lengths(cc):
        free = length - len(prefix)
        if free < 1:
            continue
        if free <= 2:
            yield from (f"{prefix}{n:0{free}d}" for n in range(10**free))
            continue
        for n in range(100):
            yield f"{prefix}{n:02d}{random_digits(rng, free - 2)}"


@dataclass(frozen=True)
class Evidence:
    """Destinations of the valid sample numbers under one prefix."""

    by_digit: dict[str, set[str]]  # by the digit after the prefix: a child's share of the evidence
    by_length: dict[int, frozenset[str]]  # by national-number length

    @property
    def length_split(self) -> bool:
        """Whether each length on its own is unanimous (Egypt's 15: fixed at 8-9 digits, mobile at 10)."""
        return bool(self.by_length) and all(len(found) == 1 for found in self.by_length.values())


def digit_class(items: list[tuple[Any, Any]]) -> set[str]:
    """The digits a regex character class ``[...]`` (or ``\\d``) accepts."""
    digits: set[str] = set()
    for op, arg in items:
        if op is sre.LITERAL:
            digits.add(chr(arg))
        elif op is sre.RANGE:
            digits.update(chr(code) for code in range(arg[0], arg[1] + 1))
        elif op is sre.CATEGORY and arg is sre.CATEGORY_DIGIT:
            digits.update(DIGITS)
        else:
            raise ValueError(f"unexpected item {op} in a character class")
    return digits & set(DIGITS)


def pattern_prefixes(items: list[tuple[Any, Any]], prefix: str, out: set[str]) -> None:
    """Collect the literal digit prefixes a parsed regex starts with, up to ``MAX_DEPTH`` digits.

    A prefix ends where the regex accepts any digit (``\\d``): there the pattern stops
    distinguishing numbers, so these prefixes are exactly where destinations can change.
    """
    if not items or len(prefix) >= MAX_DEPTH:
        out.add(prefix)
        return
    (op, arg), rest = items[0], items[1:]
    if op is sre.LITERAL:
        pattern_prefixes(rest, prefix + chr(arg), out)
    elif op is sre.IN:
        digits = digit_class(arg)
        if len(digits) == len(DIGITS):
            out.add(prefix)
            return
        for digit in sorted(digits):
            pattern_prefixes(rest, prefix + digit, out)
    elif op is sre.BRANCH:
        for alternative in arg[1]:
            pattern_prefixes(list(alternative) + rest, prefix, out)
    elif op is sre.SUBPATTERN:
        pattern_prefixes(list(arg[-1]) + rest, prefix, out)
    elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        # X{low,high} is either over (if low is 0) or one X followed by X{low-1,high-1}.
        low, high, body = arg
        if low == 0:
            pattern_prefixes(rest, prefix, out)
        if high != 0:
            left = high if high == sre.MAXREPEAT else high - 1
            pattern_prefixes([*body, (op, (max(low - 1, 0), left, body)), *rest], prefix, out)
    else:
        raise ValueError(f"unexpected regex item {op}")


@cache
def metadata_prefixes(cc: int) -> list[str]:
    """Where the calling code's metadata patterns can tell numbers apart: the prefixes to sample.

    Number types, territory patterns and leading digits (Guernsey's 1481 under +44, Saint
    Barthelemy's 59027 under +590) often start deeper than ``samples`` stratifies.
    """
    found: set[str] = set()
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]:
        meta = metadata(cc, region)
        descs = [getattr(meta, name) for name in NUMBER_DESCS]
        patterns = [desc.national_number_pattern for desc in descs if desc and desc.national_number_pattern]
        if meta.leading_digits:
            patterns.append(meta.leading_digits)
        for pattern in patterns:
            pattern_prefixes(list(sre_parser.parse(pattern)), "", found)
    return sorted(found)


@cache
def metadata_samples(cc: int) -> list[tuple[str, str]]:
    """Valid sample numbers under the metadata prefixes, with their destinations, sorted.

    Every next digit at every length, with a pseudo-random tail.
    """
    found: list[tuple[str, str]] = []
    for prefix in metadata_prefixes(cc):
        rng = random.Random(f"metadata:{cc}:{prefix}")
        for length in possible_lengths(cc):
            for digit in DIGITS if length > len(prefix) else "":
                national = prefix + digit + random_digits(rng, length - len(prefix) - 1)
                dest = destination(cc, national)
                if dest is not None:
                    found.append((national, dest))
    return sorted(found)


def metadata_samples_under(cc: int, prefix: str) -> list[tuple[str, str]]:
    """The metadata samples of a calling code under a national prefix."""
    numbers = metadata_samples(cc)
    start = bisect.bisect_left(numbers, (prefix, ""))
    end = bisect.bisect_left(numbers, (prefix + ":", ""))  # ":" sorts right after "9"
    return numbers[start:end]


def classify(cc: int, prefix: str) -> Evidence:
    """Ask phonenumbers about the sample numbers under a prefix, synthetic and from the metadata."""
    numbers = [(national, destination(cc, national)) for national in samples(cc, prefix)]
    by_digit: dict[str, set[str]] = {digit: set() for digit in DIGITS}
    by_length: dict[int, set[str]] = {}
    for national, dest in numbers + metadata_samples_under(cc, prefix):
        if dest is not None and len(national) > len(prefix):
            by_digit[national[len(prefix)]].add(dest)
            by_length.setdefault(len(national), set()).add(dest)
    return Evidence(by_digit, {length: frozenset(found) for length, found in by_length.items()})


def fallback(cc: int, found: set[str]) -> str:
    """Answer for a prefix that cannot be split: its region if single, else the main one.

    Not the mobile name: the prefix holds more than mobile numbers.
    """
    regions = {d.removesuffix(MOBILE_SUFFIX) for d in found}
    return regions.pop() if len(regions) == 1 else main_name(cc)


def explore(cc: int, prefix: str, evidence: Evidence, seen: set[str]) -> Node:
    """The subtree of a national prefix; ``seen`` is what its parent's samples found under it.

    A mixed prefix is split into its children, unless it is split by number length and its
    children look just like it: then no longer prefix separates its destinations.
    """
    found = seen.union(*evidence.by_digit.values())
    if len(found) <= 1 and prefix:
        return found.pop() if found else None
    if len(prefix) >= MAX_DEPTH:
        return fallback(cc, found)
    children = [classify(cc, prefix + digit) for digit in DIGITS]
    if (
        prefix
        and evidence.length_split
        and all(child.by_length in ({}, evidence.by_length) for child in children)
    ):
        return fallback(cc, found)
    return [
        explore(cc, prefix + digit, child, evidence.by_digit[digit])
        for digit, child in zip(DIGITS, children, strict=True)
    ]


def labels(node: Node) -> set[str]:
    """Every destination in a subtree: the candidates for a row at its root."""
    if isinstance(node, list):
        return set().union(*(labels(child) for child in node))
    return set() if node is None else {node}


class Writer:
    """Turns a prefix tree into the fewest rows that keep every longest-prefix answer.

    A row is needed where a subtree's answer differs from the one inherited from the
    nearest shorter row; free (None) ranges accept any answer.  The cost of a subtree under
    each inherited answer is memoised per node.
    """

    def __init__(self) -> None:
        self.memo: dict[tuple[int, str], tuple[int, str]] = {}

    def best(self, node: list[Node], inherited: str) -> tuple[int, str]:
        """Fewest rows for a branch under ``inherited``, and the answer its own prefix should give."""
        key = (id(node), inherited)
        if key not in self.memo:
            options = [inherited, *sorted(labels(node) - {inherited})]
            costs = {
                choice: (choice != inherited) + sum(self.cost(child, choice) for child in node)
                for choice in options
            }
            # On a tie the inherited answer wins (free ranges stay with their parent), then
            # the first in sorted order, so the output never depends on set ordering.
            choice = min(options, key=lambda option: costs[option])
            self.memo[key] = (costs[choice], choice)
        return self.memo[key]

    def cost(self, node: Node, inherited: str) -> int:
        """Rows a subtree needs under an inherited answer."""
        if isinstance(node, list):
            return self.best(node, inherited)[0]
        return 0 if node is None or node == inherited else 1

    def rows(self, node: Node, prefix: str, inherited: str) -> Iterator[tuple[str, str]]:
        """The rows of a subtree, parents before children."""
        if not isinstance(node, list):
            if node is not None and node != inherited:
                yield prefix, node
            return
        choice = self.best(node, inherited)[1]
        if choice != inherited:
            yield prefix, choice
        for digit, child in zip(DIGITS, node, strict=True):
            yield from self.rows(child, prefix + digit, choice)


def country_rows(cc: int) -> list[tuple[str, str]]:
    """All rows of one calling code: the code with its main region, then the breakouts."""
    name = main_name(cc)
    tree = explore(cc, "", classify(cc, ""), set())
    assert isinstance(tree, list), "the calling code itself is always split"
    writer = Writer()
    rows = [(str(cc), name)]
    for digit, child in zip(DIGITS, tree, strict=True):
        rows.extend(writer.rows(child, f"{cc}{digit}", name))
    return rows


def lookup(table: dict[str, str], digits: str) -> str | None:
    """Longest-prefix match, as the aggregator does it."""
    for end in range(len(digits), 0, -1):
        if digits[:end] in table:
            return table[digits[:end]]
    return None


def carrier_check(table: dict[str, str]) -> str:
    """How many carrier-data prefixes (mobile ranges) of regions with a mobile split look up mobile."""
    split = {row[1].removesuffix(MOBILE_SUFFIX) for row in table.items() if row[1].endswith(MOBILE_SUFFIX)}
    total = mobile = 0
    for prefix in sorted(CARRIER_DATA):
        answer = lookup(table, prefix) or ""
        if answer.removesuffix(MOBILE_SUFFIX) in split:
            total += 1
            mobile += answer.endswith(MOBILE_SUFFIX)
    return f"{mobile}/{total} carrier prefixes of regions with mobile rows look up to a mobile row"


def main() -> None:
    """Build the table for every calling code and write it sorted by prefix."""
    table: dict[str, str] = {}
    for cc in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        table.update(country_rows(cc))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with OUTPUT.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["prefix", "destination"])
        writer.writerows(sorted(table.items()))
    print(f"{OUTPUT}: {len(table)} rows; {carrier_check(table)}", file=sys.stderr)


if __name__ == "__main__":
    main()
