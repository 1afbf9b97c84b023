"""The worker's Faust app: its producer is handed out without a turn of the event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from breakout.settings import Settings
from streams.app import create_app


async def test_a_started_producer_is_handed_out_without_yielding_to_the_loop(tmp_path: Path) -> None:
    """Every message Faust sends asks for the producer first: Faust's own answer (mode's
    ``stampede``) took three turns of the loop each time, so a busy loop held the changelog
    to a few hundred messages a second."""
    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    producer = app.producer
    producer._started.set()  # as the app leaves it once started (starting it needs a broker)
    asking = app.maybe_start_producer()
    with pytest.raises(StopIteration) as answered:
        asking.send(None)  # runs to its end at once: it never suspends
    assert answered.value.value is producer
