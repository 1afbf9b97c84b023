"""The garbage collector's settings for the worker's processes (the API has its own)."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect cycles less often: a worker allocates a few objects per CDR and keeps millions.

    With CPython's default threshold (a young collection every 700 allocations) the
    collector re-scans the young objects of every message, and each full collection the
    whole bucket cache; measured on the aggregation loop that doubled its cost. The
    ingest process, which validates CDRs into a few objects each, is set the same way.
    Objects created at start-up are frozen (never scanned again); cycles are still
    collected, only in larger batches.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
