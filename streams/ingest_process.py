"""The ingest step in a process of its own, so that it and the aggregating agent each have a core.

On one event loop the ingest (fetching and validating CDRs, sending the internal
messages), the agent, the Redis mirror and Faust's changelog producer queue behind each
other: under live traffic at half the backlog rate that loop is busy most of the time,
and each step's wait is what a CDR's way into the breakout is made of
(``docs/operations.md``, "Live traffic"). The ingest step shares no state with the rest,
only three figures, so the worker starts it as a child process that reports them over a
pipe once each poll's messages are sent, and every ``REPORT_SECONDS`` if they moved since:

* the counters it adds to (CDRs accepted, rejected by reason), as increments;
* the newest CDR event time it has committed (the watermarks' ``ingested_ms``);
* the offset committed per CDR-topic partition assigned to it (the lag report).

Each process ends with the other. The child dies with the worker (``PR_SET_PDEATHSIG`` on
Linux, and a look at its parent every ``REPORT_SECONDS`` elsewhere), and stops with it (the
worker sends it SIGTERM). The worker stops when the child ends: as asked, when the child
stopped on a SIGTERM; as a crash, through ``fail_stop``, when it failed or was killed. So
a supervisor restarts the two together. Neither end
loses a CDR: the ingest commits a poll only once the broker has its internal messages, and
the agent's id index counts a re-sent record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection

import mode.loop

from breakout.destinations import load_dial_codes
from breakout.settings import Settings
from streams.collector import tune_gc
from streams.ingest import CLOSE_WAIT_SECONDS, Ingest

log = logging.getLogger(__name__)

# How often the figures that move after a poll's report (the offsets and event time it
# committed) are reported; a report with nothing new is not sent, so an idle ingest sends none.
REPORT_SECONDS = 1.0
# Long enough for the ingest to close its two Kafka clients (``streams.ingest``).
STOP_WAIT_SECONDS = 2 * CLOSE_WAIT_SECONDS + 5
PR_SET_PDEATHSIG = 1

# How far the ingest has got: the newest event time committed, offsets committed.
Progress = tuple[int | None, dict[int, int]]
# One report: counter increments, then the progress.
Report = tuple[dict[str, int], int | None, dict[int, int]]


class IngestProcess:
    """The worker's side: starts the child, and keeps what it reports where the worker reads it.

    ``committed`` and ``newest_event_ms`` mean what ``streams.ingest.Ingest``'s do, as of
    the last report; ``committed`` is updated in place (the lag reporter holds it).
    """

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self.committed: dict[int, int] = {}
        self.newest_event_ms: int | None = None

    async def run(self) -> None:
        """Start the child and take its reports until it ends; then stop the worker, as
        asked when the child was stopped, as a crash (raising) otherwise. Cancelling this
        (the worker stopping) stops the child."""
        context = multiprocessing.get_context("spawn")
        reports, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=serve, args=(self.settings, sender, os.getpid()), name="breakout-ingest", daemon=True
        )
        child.start()
        sender.close()
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def take_reports() -> None:
            try:
                while reports.poll():
                    self._take(reports.recv())
            except (EOFError, OSError):
                loop.remove_reader(reports.fileno())
                if not ended.done():
                    ended.set_result(None)

        loop.add_reader(reports.fileno(), take_reports)
        try:
            await ended
            await loop.run_in_executor(None, child.join, STOP_WAIT_SECONDS)
            # Stopped as asked, by SIGTERM to it alone or to the whole process group (as a
            # service manager sends), handled or arriving before its handler was set: the
            # worker stops the same way. Anything else is a crash.
            if child.exitcode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"the ingest process ended (exit status {child.exitcode})")
            log.info("the ingest process stopped; stopping the worker")
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(reports.fileno())
            reports.close()
            if child.is_alive():
                child.terminate()
                await loop.run_in_executor(None, child.join, STOP_WAIT_SECONDS)
                if child.is_alive():
                    child.kill()

    def _take(self, report: Report) -> None:
        counted, self.newest_event_ms, committed = report
        self.counters.update(counted)
        self.committed.clear()
        self.committed.update(committed)


def serve(settings: Settings, reports: Connection, parent: int) -> None:
    """The child: run ``Ingest`` and report to ``reports`` until the worker is gone."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return  # the worker was gone before the line above took effect
    # Ctrl-C reaches the whole process group: the worker stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] [ingest] %(message)s",
    )
    mode.loop.use("uvloop")
    tune_gc()
    with contextlib.suppress(BrokenPipeError):
        asyncio.run(_serve(settings, reports, parent))


class Reports:
    """The child's side: sends the worker what moved since the last report, or nothing."""

    def __init__(
        self,
        counters: Counter[str],
        progress: Callable[[], Progress],
        send: Callable[[Report], None],
    ) -> None:
        self.counters = counters
        self.progress = progress  # the newest event time and the offsets committed so far
        self.send = send
        self._reported: Counter[str] = Counter()
        self._last: Progress | None = None

    def __call__(self) -> None:
        reported = self._reported
        counted = {name: n - reported[name] for name, n in self.counters.items() if n != reported[name]}
        progress = self.progress()
        if counted or progress != self._last:
            reported.update(counted)
            self._last = progress
            self.send((counted, *progress))


async def _serve(settings: Settings, reports: Connection, parent: int) -> None:
    counters: Counter[str] = Counter()
    report = Reports(counters, lambda: (ingest.newest_event_ms, dict(ingest.committed)), reports.send)
    # Reported as soon as a poll's messages are all sent, so the counts reach the worker
    # before the CDRs they count can reach its mirror; and on a clock, for the offsets.
    ingest = Ingest(settings, load_dial_codes(settings.dial_codes), settings.retention, counters, report)
    running = asyncio.ensure_future(ingest.run())
    # SIGTERM (the worker stopping it) closes the Kafka clients, leaving the consumer group
    # at once, so that the next worker's ingest need not wait out the session timeout.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    while not running.done() and os.getppid() == parent:
        await asyncio.wait({running}, timeout=REPORT_SECONDS)
        report()
    if running.done() and not running.cancelled():
        running.result()  # the ingest loop only ends by an error: raise it, logged, exit 1
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
