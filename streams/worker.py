"""``breakout worker``: the one way to start the Faust worker."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import faust
import mode.loop

from breakout.noc.rules import check_retention, load_rules
from breakout.settings import Settings
from streams.agents import Finish, register_pipeline
from streams.alerts import alerts_topic, register_detector
from streams.app import PRODUCER_BATCH_BYTES, create_app
from streams.collector import tune_gc
from streams.ingest import normalized_topic
from streams.tables import changelog_topics
from streams.topics import ensure_topics, max_message_bytes

log = logging.getLogger(__name__)


class Worker(faust.Worker):
    """Faust's worker, which on SIGTERM or SIGINT first finishes the pipeline's work
    (``streams.agents.Finish``), then stops as Faust does. Only a stop asked for: a crash
    stops at once. ``mode`` runs ``_stop_on_signal`` for those two signals and nothing
    else, so it is the one place to act before a stop that was asked for; the class keeps
    Faust's name, so its log lines (``[^Worker]: Ready``) read as before."""

    def __init__(self, app: faust.App, finish: Finish, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.finish = finish

    async def _stop_on_signal(self, signal: signal.Signals) -> None:
        try:
            await self.finish()
        except Exception:  # a stop must happen whatever finishing met
            log.exception("stopping without finishing")
        await super()._stop_on_signal(signal)


def run_worker(settings: Settings) -> None:
    """Check the alert rules, create the topics, then run the Faust worker until SIGINT/SIGTERM.

    The producer's batches are sized to the changelogs' ``max.message.bytes``, read from the
    broker: a larger batch would be refused.
    """
    rules = load_rules(settings.alert_rules)
    check_retention(rules, settings.minute_retention)
    mode.loop.use("uvloop")
    topics = [settings.topic, settings.dlq_topic, normalized_topic(settings), alerts_topic(settings)]
    changelogs = changelog_topics(settings.app_id)
    asyncio.run(ensure_topics(settings, [*topics, *changelogs], compacted=changelogs))
    limits = asyncio.run(max_message_bytes(settings, list(changelogs)))
    app = create_app(settings, producer_batch_bytes=min(PRODUCER_BATCH_BYTES, *limits.values()))
    finish = register_pipeline(app, settings)
    register_detector(app, settings, rules)
    worker = Worker(app, finish, loglevel=settings.log_level, quiet=True)
    # Faust's start-up spinner turns the root logger to DEBUG so that every log record spins
    # it: each debug line of aiokafka and Faust (several per produced message) would then be
    # built and thrown away, about a tenth of the worker's time under load.
    worker.spinner = None
    tune_gc()
    worker.execute_from_commandline()
