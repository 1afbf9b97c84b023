"""The one way Breakout's processes open Redis: a single server, or a Redis Cluster.

``BREAKOUT_REDIS`` names a single server as ``redis://host:port/db`` (``rediss://`` for
TLS) and a cluster as ``redis+cluster://host:port`` (``rediss+cluster://``), any one of
its nodes: the client discovers the others and routes each command to the shard of its
key's slot. Every key name carries a hash tag (``breakout.redis_layout.Layout``), so a
script, a transaction or a multi-key command never spans slots; only pipelines do, and
the cluster client splits those by shard.

This module builds clients and reads a cluster's shape; what is stored where is
``breakout.redis_layout``'s.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.exceptions import RedisClusterException, RedisError

from breakout.redis_layout import Layout, shard_markers

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client = aioredis.Redis | RedisCluster
# What a Redis that is down, restarting or (a cluster) changing shape raises: the cluster
# client's own RedisClusterException (e.g. no node reachable) is not a RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster."""
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def connect(url: str, **options: Any) -> Client:
    """A client of ``url`` (no connection is made until it is used).

    ``options`` are redis-py's (``socket_timeout``, ``socket_connect_timeout``, …); a
    ``connection_class`` applies to a single server only, as the cluster client makes its
    own connections.
    """
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        options.pop("connection_class", None)
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
    return aioredis.from_url(url, **options)


class EpochKeys:
    """The mirror's epoch keys on one client's Redis: the marker, and one more per cluster
    shard (``breakout.redis_layout.shard_markers``), recomputed when the slot map changes."""

    def __init__(self, client: Client, layout: Layout) -> None:
        self.client = client
        self.layout = layout
        self._slots: object = None
        self._keys = shard_markers(layout, [])

    async def keys(self) -> list[str]:
        client = self.client
        if not isinstance(client, RedisCluster):
            return self._keys
        await client.initialize()
        slots = client.nodes_manager.slots_cache  # replaced whole when the cluster changes
        if slots is not self._slots:
            owners: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            for slot, nodes in slots.items():
                owners[slot] = nodes[0].name
            self._slots, self._keys = slots, shard_markers(self.layout, owners)
        return self._keys


async def get_many(client: Client, names: list[str]) -> list[Any]:
    """``GET`` of every name, in order: one ``MGET`` on a single server, one per slot (sent
    together) on a cluster."""
    if isinstance(client, RedisCluster):
        return await client.mget_nonatomic(names)
    return await client.mget(names)
