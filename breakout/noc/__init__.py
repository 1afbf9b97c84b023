"""The NOC ASR-drop detector's pure core: rules, rolling per-minute series, the state machine.

No I/O here: ``streams/alerts.py`` feeds it minute buckets from the Redis mirror and
publishes what it decides; ``docs/noc-alerts.md`` describes the semantics.
"""
