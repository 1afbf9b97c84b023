"""One computation per key among concurrent callers.

When many portal users press Refresh at once, their identical reports read the same
bucket versions: computing each one separately multiplies the work by the number of
callers while adding nothing. A caller that finds the same key in flight awaits that
computation instead of starting its own. Keys carry the bucket versions the caller read,
so no caller ever receives an answer computed from versions older than its own: the one in
flight started from the same versions and read its rows after them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs ``compute`` once per key at a time; callers arriving meanwhile share its outcome."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Coroutine[Any, Any, T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            # A task of its own, so the caller that started it going away (a client that
            # disconnects) cancels neither the computation nor the callers sharing it.
            flight = asyncio.ensure_future(compute())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._land(key, done))
        return await asyncio.shield(flight)

    def _land(self, key: Hashable, flight: asyncio.Task[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: an error every caller left before seeing is not "lost"

    def __len__(self) -> int:
        return len(self._flights)
