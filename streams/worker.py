"""``breakout worker``: the one way to start the Faust worker."""

from __future__ import annotations

import asyncio

import faust
import mode.loop

from breakout.noc.rules import check_retention, load_rules
from breakout.settings import Settings
from streams.agents import register_pipeline
from streams.alerts import alerts_topic, register_detector
from streams.app import create_app
from streams.ingest import normalized_topic
from streams.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Check the alert rules, create the topics, then run the Faust worker until SIGINT/SIGTERM."""
    rules = load_rules(settings.alert_rules)
    check_retention(rules, settings.minute_retention)
    mode.loop.use("uvloop")
    topics = [settings.topic, settings.dlq_topic, normalized_topic(settings), alerts_topic(settings)]
    asyncio.run(ensure_topics(settings, topics))
    app = create_app(settings)
    register_pipeline(app, settings)
    register_detector(app, settings, rules)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
