"""Breakout: near-real-time, billing-accurate CDR breakout aggregation.

This package is the core: the CDR contract, destination lookup, aggregate
arithmetic, settings and the CLI. It does no Kafka, Redis or HTTP I/O of its
own; ``streams`` (Faust) and ``api`` (HTTP) are the edges around it.
"""

__version__ = "0.1.0"
