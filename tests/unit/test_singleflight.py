"""Concurrent callers of one key share one computation; other keys and later calls do not."""

from __future__ import annotations

import asyncio

import pytest

from api.singleflight import SingleFlight


def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    async def scenario() -> None:
        flights: SingleFlight[int] = SingleFlight()
        runs = 0
        gate = asyncio.Event()

        async def compute() -> int:
            nonlocal runs
            runs += 1
            await gate.wait()
            return runs

        callers = [asyncio.create_task(flights.run("k", compute)) for _ in range(5)]
        other = asyncio.create_task(flights.run("other", compute))
        await asyncio.sleep(0)
        assert len(flights) == 2
        gate.set()
        assert await asyncio.gather(*callers) in ([1] * 5, [2] * 5)
        assert await other in (1, 2)
        assert runs == 2 and len(flights) == 0
        # Done flights are not reused: a later call computes again.
        assert await flights.run("k", compute) == 3

    asyncio.run(scenario())


def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    async def scenario() -> None:
        flights: SingleFlight[int] = SingleFlight()
        gate = asyncio.Event()

        async def fail() -> int:
            await gate.wait()
            raise ValueError("redis went away")

        callers = [asyncio.create_task(flights.run("k", fail)) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        for caller in callers:
            with pytest.raises(ValueError, match="redis went away"):
                await caller

        async def works() -> int:
            return 7

        assert await flights.run("k", works) == 7

    asyncio.run(scenario())


def test_a_caller_going_away_cancels_neither_the_computation_nor_the_others() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str] = SingleFlight()
        gate = asyncio.Event()

        async def compute() -> str:
            await gate.wait()
            return "answer"

        first = asyncio.create_task(flights.run("k", compute))
        second = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        gate.set()
        assert await second == "answer"
        assert first.cancelled()

    asyncio.run(scenario())
