"""The Redis keys of the alert detector (``docs/redis-layout.md``), shared by the worker and the API.

They carry the app's hash tag ``{app}`` (``breakout.redis_layout.Layout``): the detector
writes several of them in one transaction, which a Redis Cluster allows in one slot only.
"""

from __future__ import annotations


def active_key(app_id: str) -> str:
    """Hash: subject (``breakout.noc.alert.subject_text``) → the raise alert's JSON, per open incident."""
    return f"{{{app_id}}}:alerts:active"


def history_key(app_id: str) -> str:
    """Sorted set: every alert's JSON document, scored by ``detected_at`` in epoch milliseconds."""
    return f"{{{app_id}}}:alerts:history"


def events_channel(app_id: str) -> str:
    """Pub/sub channel: each alert's JSON document as it is recorded."""
    return f"{{{app_id}}}:alerts:events"


def cursor_key(app_id: str) -> str:
    """String: the start (epoch s) of the next minute the detector evaluates."""
    return f"{{{app_id}}}:alerts:cursor"


def state_key(app_id: str) -> str:
    """Hash: subject → the detector's state of that metric of that key (open incident, recovery streak)."""
    return f"{{{app_id}}}:alerts:state"


def snapshot_key(app_id: str, minute_start: int) -> str:
    """String: the per (destination, provider) counts the detector used for one minute.

    Encoded by ``breakout.noc.minutes``.
    """
    return f"{{{app_id}}}:alerts:minute:{minute_start}"
