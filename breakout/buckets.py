"""Tumbling event-time buckets and their retention, measured in stream time.

Stream time is the latest CDR start time a partition has seen, so expiry is the
same whether traffic is live or last week's replay; wall-clock time never decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Granularity(StrEnum):
    """Bucket sizes, by the one-letter code used in table and Redis keys.

    A ``StrEnum`` hashes and compares as its string, in C: bucket keys are built and
    looked up three times per CDR.
    """

    MINUTE = "m"
    HOUR = "h"
    DAY = "d"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]


_SECONDS = {Granularity.MINUTE: 60, Granularity.HOUR: 3600, Granularity.DAY: 86400}
GRANULARITIES = tuple(Granularity)


def bucket_start(start_ms: int, granularity: Granularity) -> int:
    """Epoch seconds at which the bucket holding ``start_ms`` begins (UTC)."""
    size = granularity.seconds
    return (start_ms // 1000) // size * size


@dataclass(frozen=True)
class Retention:
    """How long, in seconds of stream time after it ends, each bucket size is kept."""

    minute: int
    hour: int
    day: int

    def of(self, granularity: Granularity) -> int:
        return {Granularity.MINUTE: self.minute, Granularity.HOUR: self.hour, Granularity.DAY: self.day}[
            granularity
        ]

    @property
    def longest_kept(self) -> int:
        """The longest any bucket size is kept: a CDR older than stream time minus this
        is in no kept bucket (and younger ones may still be, depending on alignment)."""
        return max(self.minute, self.hour, self.day)

    @property
    def longest(self) -> int:
        return max(self.minute + 60, self.hour + 3600, self.day + 86400)

    def expires_at(self, granularity: Granularity, start: int) -> int:
        """Stream time (epoch seconds) from which the bucket beginning at ``start`` is gone."""
        return start + granularity.seconds + self.of(granularity)

    def is_expired(self, granularity: Granularity, start: int, stream_time: int) -> bool:
        return stream_time >= self.expires_at(granularity, start)
