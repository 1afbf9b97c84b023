"""``breakout demo``'s pacing: event time stays the wall clock's, whatever a sleep overshoots."""

from __future__ import annotations

import orjson
import pytest

from streams import publish


class Clock:
    """A wall clock that only moves when slept on, and overshoots every sleep by 1 ms
    (as a loaded event loop does)."""

    def __init__(self) -> None:
        self.now = 1_795_800_000.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + 0.001


@pytest.mark.parametrize("batch", [1, 100])
async def test_demo_cdrs_are_sent_at_their_start_time(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    clock = Clock()
    monkeypatch.setattr(publish.time, "time", clock.time)
    monkeypatch.setattr(publish.time, "monotonic", clock.time)
    monkeypatch.setattr(publish.asyncio, "sleep", clock.sleep)
    rate = 200.0
    sent = 0
    async for value in publish._demo_messages(rate, batch):
        document = orjson.loads(value)
        newest = (document if batch > 1 else [document])[-1]["start_time"]
        # Never sent early; never behind by more than a run of overshoots (the old pacing
        # drifted 1 ms a message, a second behind by the end).
        assert clock.now - 0.05 <= newest <= clock.now + 0.001
        sent += batch
        if sent >= 2_000:
            break
    # 10 s of traffic at 200 CDR/s (give or take the random gaps), not 9 % less.
    assert sent / (clock.now - 1_795_800_000.0) == pytest.approx(rate, rel=0.1)
