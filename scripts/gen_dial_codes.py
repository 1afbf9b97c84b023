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
  classified by asking phonenumbers about synthetic numbers under it (every next two
  digits, a deterministic pseudo-random tail, every possible length of the calling code).
  Each valid number's destination is the region phonenumbers assigns it
  (``region_code_for_number``: this separates e.g. Canada from the United States under +1,
  or Jersey from the United Kingdom under +44) plus `` - Mobile`` when its type is MOBILE.
  Regions whose fixed and mobile patterns coincide (type FIXED_LINE_OR_MOBILE, e.g. the
  United States) therefore get no mobile rows.  A prefix whose numbers all agree becomes a
  leaf; a prefix with no valid number is left free; a mixed one is split into its ten
  children, down to ``MAX_DEPTH`` national digits (still mixed there: the region, or the
  calling code's main region if the regions differ too).
* The tree is then written with the fewest rows that give the same longest-prefix answer
  for every valid number: a prefix whose ten children agree is replaced by the parent, a
  row repeating what a shorter prefix already gives is dropped, and free (unallocated)
  ranges take whatever answer needs no row.
* phonenumbers' carrier data (prefixes of ranges allocated to mobile carriers) is used as
  a cross-check: the script prints how many of those prefixes look up to a mobile row.

The generated CSV (``prefix,destination``, sorted by prefix, UTF-8) is committed; operators
who need their own breakout point ``BREAKOUT_DIAL_CODES`` at a CSV of the same shape.

Run: ``.venv/bin/python scripts/gen_dial_codes.py``
"""

from __future__ import annotations

import csv
import random
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberType, geocoder
from phonenumbers.carrierdata import CARRIER_DATA

OUTPUT = Path(__file__).resolve().parent.parent / "breakout" / "data" / "dial_codes.csv"

# Deepest national prefix explored.  Numbering plans separate mobile from fixed (and
# territories sharing a calling code) within the first few national digits; deeper splits
# fall back to the region name, which is correct, only less specific.
MAX_DEPTH = 6

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
    888: "International Humanitarian Services",
    979: "International Premium Rate",
}

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
        return PhoneMetadata.metadata_for_nongeo_region(cc)
    return PhoneMetadata.metadata_for_region(region)


@cache
def possible_lengths(cc: int) -> tuple[int, ...]:
    """National-number lengths any region of the calling code allows: the lengths to sample."""
    lengths: set[int] = set()
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]:
        lengths.update(metadata(cc, region).general_desc.possible_length)
    return tuple(sorted(lengths))


def phone_number(cc: int, national: str) -> PhoneNumber:
    """A PhoneNumber for digits that may start with zeros (as Italian numbers do)."""
    zeros = len(national) - len(national.lstrip("0"))
    number = PhoneNumber(country_code=cc, national_number=int(national))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = min(zeros, len(national) - 1) or None
    return number


def destination(cc: int, national: str) -> str | None:
    """Destination of one number as phonenumbers sees it; None when it is not a valid number."""
    number = phone_number(cc, national)
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return None
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        return None
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return NON_GEO_NAMES[cc]
    name = region_name(region)
    return name + MOBILE_SUFFIX if kind == PhoneNumberType.MOBILE else name


def samples(cc: int, prefix: str) -> Iterator[str]:
    """Synthetic national numbers under a prefix: every next two digits at every length.

    The tail after those two digits is pseudo-random but seeded by the prefix, so the
    output is the same on every run.
    """
    rng = random.Random(f"{cc}:{prefix}")
    for length in possible_lengths(cc):
        free = length - len(prefix)
        if free < 0:
            continue
        if free <= 2:
            for n in range(10**free):
                yield prefix + (f"{n:0{free}d}" if free else "")
            continue
        for n in range(100):
            tail = "".join(rng.choice("0123456789") for _ in range(free - 2))
            yield f"{prefix}{n:02d}{tail}"


def classify(cc: int, prefix: str) -> dict[str, set[str]]:
    """Destinations of the valid sample numbers under a prefix, by their next digit.

    Grouping by the next digit lets each child reuse its parent's samples as extra evidence.
    """
    found: dict[str, set[str]] = {digit: set() for digit in "0123456789"}
    for national in samples(cc, prefix):
        dest = destination(cc, national)
        if dest is not None and len(national) > len(prefix):
            found[national[len(prefix)]].add(dest)
    return found


def fallback(cc: int, found: set[str]) -> str:
    """Answer for a prefix still mixed at MAX_DEPTH: its region if single, else the main one."""
    regions = {d.removesuffix(MOBILE_SUFFIX) for d in found}
    return regions.pop() if len(regions) == 1 else main_name(cc)


def explore(cc: int, prefix: str, seen: set[str]) -> Node:
    """The subtree of a national prefix; ``seen`` are destinations its parent's samples found here."""
    by_digit = classify(cc, prefix)
    found = seen.union(*by_digit.values())
    if len(found) <= 1 and prefix:
        return found.pop() if found else None
    if len(prefix) >= MAX_DEPTH:
        return fallback(cc, found)
    return [explore(cc, prefix + digit, by_digit[digit]) for digit in "0123456789"]


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
            self.memo[key] = min(
                ((choice != inherited) + sum(self.cost(child, choice) for child in node), choice)
                for choice in options
            )
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
        for digit, child in zip("0123456789", node, strict=True):
            yield from self.rows(child, prefix + digit, choice)


def country_rows(cc: int) -> list[tuple[str, str]]:
    """All rows of one calling code: the code with its main region, then the breakouts."""
    name = main_name(cc)
    tree = explore(cc, "", set())
    writer = Writer()
    rows = [(str(cc), name)]
    for digit, child in zip("0123456789", tree if isinstance(tree, list) else [tree] * 10, strict=True):
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
