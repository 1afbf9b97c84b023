"""The detector's loop ends when the worker stops, even if a round swallowed the cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from breakout.noc.rules import Rules
from breakout.settings import Settings
from streams import alerts
from streams.alerts import AlertRunner


async def send(key: bytes, value: bytes) -> None:
    raise AssertionError("no alert is due")


async def test_a_round_that_swallows_the_cancellation_does_not_keep_the_worker_from_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call inside a round that completes just as the cancellation arrives can swallow it
    (``asyncio.wait_for`` on Python 3.11); the loop then goes on to its next round, unless it
    also asks whether the worker is stopping. Here every round swallows it."""
    monkeypatch.setattr(alerts, "TICK_SECONDS", 0.01)
    runner = AlertRunner(Settings(), Rules(), send)
    rounds = 0
    in_round = asyncio.Event()

    async def swallowing_tick() -> None:
        nonlocal rounds
        rounds += 1
        in_round.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    monkeypatch.setattr(runner, "tick", swallowing_tick)
    stopping = False
    task = asyncio.ensure_future(runner.run(lambda: True, lambda: stopping))
    await asyncio.wait_for(in_round.wait(), 5)
    stopping = True  # Faust sets it before it cancels the app's tasks
    task.cancel()
    await asyncio.wait_for(task, 5)  # ends, having swallowed its cancellation
    assert rounds == 1


async def test_a_follower_runs_no_round_and_stops_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "TICK_SECONDS", 0.01)
    runner = AlertRunner(Settings(), Rules(), send)
    rounds = 0

    async def counting_tick() -> None:
        nonlocal rounds
        rounds += 1

    monkeypatch.setattr(runner, "tick", counting_tick)
    leading = False
    checks = 0

    def stopping() -> bool:
        nonlocal checks
        checks += 1
        return checks > 20

    await asyncio.wait_for(runner.run(lambda: leading, stopping), 5)
    assert rounds == 0
    leading, checks = True, 0
    await asyncio.wait_for(runner.run(lambda: leading, stopping), 5)
    assert rounds > 0
