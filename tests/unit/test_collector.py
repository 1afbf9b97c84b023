"""The API's garbage-collection clock: young and middle collections whatever the counts say."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from api import collector


async def test_the_young_generation_is_collected_on_a_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allocations balanced by deallocations never reach a threshold; the clock collects anyway."""
    monkeypatch.setattr(collector, "YOUNG_SECONDS", 0.01)
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.set_threshold(10**9)  # no collection by counts during the test
    gc.callbacks.append(note)
    clock = asyncio.create_task(collector.collect_regularly())
    try:
        await asyncio.sleep(0.2)
    finally:
        clock.cancel()
        gc.callbacks.remove(note)
        gc.set_threshold(*thresholds)
    assert seen.count(1) >= 3  # the young and middle generations together
    assert seen == [1] * len(seen)  # never a young one alone, never a full collection
