"""The status line of ``breakout up``, from two scrapes of the API's /metrics."""

from __future__ import annotations

from breakout.status import Scrape, status_line

METRICS = """\
# HELP breakout_worker_cdrs CDRs counted by the running workers since they started, by outcome
# TYPE breakout_worker_cdrs gauge
breakout_worker_cdrs{outcome="accepted"} %d
breakout_worker_cdrs{outcome="rejected:bad_json"} 2.0
breakout_worker_cdrs{outcome="rejected:too_late"} 1.0
breakout_worker_cdrs{outcome="duplicates"} 7.0
# HELP breakout_consumer_lag Messages a worker has yet to commit
# TYPE breakout_consumer_lag gauge
breakout_consumer_lag{partition="0",topic="cdrs"} 3.0
breakout_consumer_lag{partition="1",topic="cdrs"} 4.0
breakout_consumer_lag{partition="0",topic="breakout-normalized"} 90.0
# HELP breakout_mirror_as_of_age_seconds Age of as_of
# TYPE breakout_mirror_as_of_age_seconds gauge
breakout_mirror_as_of_age_seconds 1.25
"""


def test_a_scrape_sums_what_the_line_shows() -> None:
    scrape = Scrape.parse(METRICS % 1000, "cdrs")
    assert scrape == Scrape(accepted=1000, rejected=3, lag=7, as_of_age=1.25)


def test_the_line_shows_the_rate_between_scrapes() -> None:
    before, after = Scrape.parse(METRICS % 1000, "cdrs"), Scrape.parse(METRICS % 1400, "cdrs")
    assert status_line(before, after, 2.0) == "CDR/s 200 · lag 7 msgs · as_of 1.2 s old · dead letters 3"


def test_what_is_not_known_yet_is_a_dash() -> None:
    empty = Scrape.parse("", "cdrs")
    assert status_line(empty, empty, 2.0) == "CDR/s 0 · lag - · as_of - · dead letters 0"
