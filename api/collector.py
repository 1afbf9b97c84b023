"""How an API process keeps Python's cyclic garbage collector from pausing it.

The API holds millions of decoded rows in its caches (small tuples and lists, none in a
cycle), and every Refresh during live traffic replaces some. Two things made the collector
pause requests for up to seconds (``bench/api_load.py``):

* With CPython's default thresholds it ran full collections of the caches every few
  seconds. So objects from start-up are frozen, the young generations are collected in
  larger batches, and full collections are rare.
* A young collection starts when allocations outnumber deallocations by a threshold, and a
  Refresh that replaces cached rows frees about as many objects as it makes: the young
  generation then grew for over a minute without one, and the collection that finally came
  scanned every row read meanwhile, 7 s in one measured pause. So the young generation is
  also collected on a clock, often enough to stay small, and a large fill (a month read
  cold) is frozen at once, never scanned.

The clock collects the young and middle generations together, so an object is scanned
once before it joins the old generation. Timing every collection under the bench showed
why: none of them found garbage, and the middle generation collected every 5 s held the
survivors of ten young collections, each scanned a second time, in pauses of up to 506 ms;
collecting both on the clock cut the collector's time by 15 % and its longest pause to
148 ms. A full collection stays as rare (after 10,000 middle ones: about 80 minutes).

Cycles are still collected: the short-lived ones (asyncio's, exceptions') in the young and
middle generations, which the clock collects; only a cycle alive at a large fill's freeze
and dropped later is never freed, a few objects per fill.
"""

from __future__ import annotations

import asyncio
import gc

# A young collection every this many allocations; the middle generation every 10 of those;
# a full one only after 10,000 middle ones.
GC_THRESHOLDS = (20_000, 10, 10_000)
# And the young and middle generations together this often, whatever the counts say.
YOUNG_SECONDS = 0.5


def tune_gc() -> None:
    """Freeze what start-up made and set the thresholds. Once per API process as it starts,
    not per app (tests make many apps in one process)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def collect_regularly() -> None:
    """Collect the young and middle generations every ``YOUNG_SECONDS`` (see the module's
    docstring)."""
    while True:
        await asyncio.sleep(YOUNG_SECONDS)
        gc.collect(1)


def freeze_fill() -> None:
    """Move what a large cache fill just made out of the collector's sight, unscanned:
    collecting first would visit every row just read (seconds for a month). Reference
    counting still frees the frozen rows when the cache lets go of them."""
    gc.freeze()
