"""``breakout worker``: the one way to start the Faust worker."""

from __future__ import annotations

import asyncio

import faust
import mode.loop

from breakout.settings import Settings
from streams.agents import register_pipeline
from streams.app import create_app
from streams.ingest import normalized_topic
from streams.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Create the topics, then run the Faust worker until SIGINT/SIGTERM."""
    mode.loop.use("uvloop")
    asyncio.run(ensure_topics(settings, [settings.topic, settings.dlq_topic, normalized_topic(settings)]))
    app = create_app(settings)
    register_pipeline(app, settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
