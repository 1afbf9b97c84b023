"""Baseline for bench/ingest.py: the textbook Faust agent, one table increment per event.

Every CDR is decoded by Faust, iterated one by one, and counted with ``table[key] += 1``,
so each event costs Faust's per-event path plus one changelog message. Prints the
CDR/s it reached once it has counted ``--expect`` events.
"""

from __future__ import annotations

import argparse
import os
import time

import faust
import mode.loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--datadir", required=True, help="Faust's data directory (a scratch one)")
    args = parser.parse_args()
    mode.loop.use("uvloop")
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.kafka}",
        store="memory://",
        datadir=args.datadir,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
    )
    counts = app.Table("counts", default=int, partitions=4)
    topic = app.topic(args.topic, value_serializer="json")
    state = {"seen": 0, "started": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[dict]) -> None:  # type: ignore[type-arg]
        async for cdr in stream:
            if state["seen"] == 0:
                state["started"] = time.perf_counter()
            counts[cdr["customer_id"]] += 1
            state["seen"] += 1
            if state["seen"] == args.expect:
                elapsed = time.perf_counter() - state["started"]
                # Straight to fd 1: Faust's worker routes sys.stdout through its logger.
                os.write(1, f"RESULT {args.expect / elapsed:.0f}\n".encode())  # the bench stops us

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
