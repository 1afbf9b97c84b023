"""How long the mirror waits between flushes (``streams.mirror.pause_after``)."""

from __future__ import annotations

import pytest

from streams.mirror import FLUSH_SECONDS, pause_after


def test_a_quick_flush_is_followed_by_the_rest_of_the_cadence() -> None:
    assert pause_after(0.1, 0.05, backlog=False) == pytest.approx(FLUSH_SECONDS - 0.1)


def test_a_flush_that_mostly_waited_for_redis_is_followed_at_once() -> None:
    """Live traffic: 450 ms writing, 90 ms of it the mirror's own work on the loop."""
    assert pause_after(0.45, 0.09, backlog=False) == pytest.approx(FLUSH_SECONDS - 0.45)
    assert pause_after(0.9, 0.09, backlog=False) == 0


def test_the_mirrors_own_work_is_held_to_half_the_loop() -> None:
    assert pause_after(0.8, 0.6, backlog=False) == pytest.approx(0.4)  # 0.6 s of 1.2 s


def test_in_a_backlog_a_flush_is_followed_by_a_pause_as_long_as_itself() -> None:
    assert pause_after(0.9, 0.09, backlog=True) == pytest.approx(0.9)
    assert pause_after(0.1, 0.05, backlog=True) == pytest.approx(FLUSH_SECONDS - 0.1)
