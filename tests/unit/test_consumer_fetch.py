"""How the agent's Kafka consumer fetches (``streams.agents``): what it stops fetching once
the tables are recovered, and how long the broker may hold each fetch. aiokafka's own
assignment objects, a recording stand-in for its fetcher."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import Assignment

from streams.agents import FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS, FetchRequestBuilder, unread_partitions

SOURCE = "app-normalized"
CHANGELOGS = ("app-rows-changelog", "app-versions-changelog", "app-progress-changelog")
LEADER = "app-__assignor-__leader"


class RecordingFetcher:
    """aiokafka's fetcher as far as the builder reads it: what is fetched and not yet taken,
    the wait a request would carry, and a request builder that notes that wait."""

    def __init__(self) -> None:
        self._records: dict[TopicPartition, object] = {}
        self._fetch_max_wait_ms = 500
        self.waits: list[int] = []

    def _get_actions_per_node(self, assignment: Any) -> str:
        self.waits.append(self._fetch_max_wait_ms)
        return "requests"


def test_a_recovered_worker_stops_fetching_its_own_changelogs_and_the_leader_topic() -> None:
    assigned = {
        *(TopicPartition(SOURCE, p) for p in (0, 1)),
        *(TopicPartition(topic, p) for topic in CHANGELOGS for p in (0, 1, 2, 3)),
        TopicPartition(LEADER, 0),
    }
    standbys = {TopicPartition(topic, p) for topic in CHANGELOGS for p in (2, 3)}

    unread = unread_partitions(assigned, {*CHANGELOGS, LEADER}, standbys)

    assert sorted(unread) == sorted(
        [*(TopicPartition(topic, p) for topic in CHANGELOGS for p in (0, 1)), TopicPartition(LEADER, 0)]
    )


async def test_the_broker_holds_a_fetch_long_only_when_no_partition_waits_for_it() -> None:
    fetched, taken, paused = (TopicPartition(SOURCE, p) for p in (0, 1, 2))
    assignment = Assignment({fetched, taken, paused, TopicPartition(CHANGELOGS[0], 0)})
    assignment.state_value(paused).pause()
    fetcher = RecordingFetcher()
    build = FetchRequestBuilder(fetcher)

    assert build(assignment) == "requests"  # nothing held: every partition is asked for
    fetcher._records[fetched] = object()  # fetched, not yet taken by the agent: left out
    build(assignment)
    del fetcher._records[fetched]
    fetcher._records[paused] = object()  # held by a paused partition, never fetched again
    build(assignment)

    assert fetcher.waits == [IDLE_FETCH_WAIT_MS, FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS]
