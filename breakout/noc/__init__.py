"""The NOC detector's pure core (ASR and NER drops, PDD rises): rules, series, checks, the state machine.

No I/O here: ``streams/alerts.py`` feeds it minute buckets from the Redis mirror and
publishes what it decides; ``docs/noc-alerts.md`` describes the semantics.
"""
