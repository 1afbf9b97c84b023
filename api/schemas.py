"""Response shapes, for the OpenAPI reference. Handlers return plain dicts through orjson."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Figures(BaseModel):
    """The columns of a row. Money and ratios are decimal strings, never floats."""

    currency: str | None = Field(description="ISO 4217; null in `totals` when several currencies are present")
    attempts: int = Field(description="CDRs (call attempts)")
    connected: int = Field(description="Answered calls")
    asr: str | None = Field(description="100 x connected / attempts, 2 places; null without attempts")
    acd: str | None = Field(description="Billed seconds / connected, 2 places; null without connected calls")
    duration: str = Field(description="Billed seconds of connected calls, 3 places")
    duration_hms: str = Field(description="`duration` as H:MM:SS")
    provider_charge: str | None = Field(
        description="Sum of provider charges, 6 places; null for customer keys"
    )
    customer_charge: str | None = Field(description="Sum of customer charges (rated CDRs), 6 places")
    profit: str | None = Field(description="customer_charge - provider_charge; null for customer keys")
    profit_pct: str | None = Field(description="100 x profit / customer_charge, 2 places")
    pending: int = Field(
        description="CDRs not rated yet (customer_charge null); their money is not in the sums"
    )
    dtmf: int = Field(description="Calls with DTMF detected")
    dtmf_pct: str | None = Field(description="100 x dtmf / attempts, 2 places")
    ner: str | None = Field(
        description="Network effectiveness ratio (ITU-T E.425): 100 x effective / attempts, 2 places; "
        "an attempt is effective when answered or ended by the callee (busy, no answer, rejected)"
    )
    pdd: str | None = Field(
        description="Average post-dial delay in seconds over the calls that carried `pdd_ms`, 2 places"
    )
    short_calls: int = Field(description="Connected calls under BREAKOUT_SHORT_CALL_SECONDS (default 6)")
    short_pct: str | None = Field(description="100 x short_calls / connected, 2 places")
    sip_codes: dict[str, int] = Field(
        description="Attempts per final SIP code, most first: catalogue codes (`503`), other codes by "
        "class (`5xx`), `none` for attempts without a `sip_code`; only codes that occurred"
    )


class Row(Figures):
    customer: str | None = Field(None, description="Present when grouped by customer")
    destination: str | None = Field(None, description="Present when grouped by destination")
    provider: str | None = Field(None, description="Present when grouped by provider")


class Snapshot(BaseModel):
    from_: str = Field(alias="from", description="Start of the range (inclusive), ISO 8601 in `tz`")
    to: str = Field(description="End of the range (exclusive), ISO 8601 in `tz`")
    tz: str
    group_by: list[str]
    as_of: str | None = Field(
        description="Event time up to which every partition is mirrored; null before any"
    )
    as_of_ms: int | None
    behind_ms: int | None = Field(
        description="Milliseconds the newest mirrored event time trails the newest CDR the workers "
        "have ingested: a few hundred when the pipeline keeps up, growing when it falls behind; "
        "null before the first CDR"
    )
    total_rows: int = Field(description="Rows before paging")
    offset: int
    limit: int
    rows: list[Row]
    totals: Figures = Field(description="Over all rows (not only the page); money only with one currency")
    currency_totals: list[Figures] = Field(description="Totals per currency")


class Point(BaseModel):
    """One step of a series: only the metrics asked for are present."""

    start: str = Field(description="Start of the step (inclusive), ISO 8601 in `tz`")
    end: str = Field(description="End of the step (exclusive), ISO 8601 in `tz`")
    attempts: int | None = None
    connected: int | None = None
    asr: str | None = Field(None, description="Percent, 2 places; null without attempts")
    ner: str | None = Field(None, description="Percent, 2 places; null without attempts")
    acd: str | None = Field(None, description="Seconds, 2 places; null without connected calls")
    pdd: str | None = Field(None, description="Seconds, 2 places; null without a call carrying `pdd_ms`")
    short_calls: int | None = None
    short_pct: str | None = Field(None, description="Percent of connected calls, 2 places")
    duration: str | None = Field(None, description="Billed seconds, 3 places")
    dtmf: int | None = None
    dtmf_pct: str | None = None


class Series(BaseModel):
    from_: str = Field(alias="from")
    to: str
    tz: str
    resolution: str = Field(description="`minute`, `15m`, `hour` or `day`")
    metrics: list[str]
    as_of: str | None
    as_of_ms: int | None
    behind_ms: int | None
    points: list[Point] = Field(description="Every step of the range, oldest first")


class Cause(BaseModel):
    code: str = Field(description="A SIP code (`503`), another code's class (`5xx`), or `none`")
    label: str
    count: int = Field(description="Attempts with this final code in the range")
    share: str | None = Field(description="Percent of the range's attempts, 2 places")
    previous_count: int | None = Field(description="The same in the previous period; null: beyond retention")
    previous_share: str | None
    change_points: str | None = Field(description="share - previous_share, percentage points, 2 places")


class PreviousPeriod(BaseModel):
    from_: str = Field(alias="from")
    to: str


class Causes(BaseModel):
    from_: str = Field(alias="from")
    to: str
    tz: str
    as_of: str | None
    as_of_ms: int | None
    behind_ms: int | None
    previous: PreviousPeriod = Field(description="The period of equal length just before the range")
    attempts: int
    previous_attempts: int | None = Field(description="Null when the previous period is beyond retention")
    codes: list[Cause] = Field(description="What grew most first (by change_points), then by count")


class Value(BaseModel):
    name: str
    attempts: int


class ValueList(BaseModel):
    from_: str = Field(alias="from")
    to: str
    tz: str
    as_of: str | None
    values: list[Value] = Field(description="Most attempts first")


class Me(BaseModel):
    role: str = Field(description="`admin` or `customer`")
    customer: str | None


class Error(BaseModel):
    """Every error the API answers: 401, 403, 422 and 503 alike."""

    detail: str = Field(description="One sentence saying what went wrong and what to change")


class ConsumerLag(BaseModel):
    topic: str
    partition: int
    lag: int = Field(description="Messages not committed yet: end offset - committed offset")
    end: int = Field(description="The partition's end offset, as the worker last saw it")
    committed: int = Field(description="The consumer group's committed offset")
    stalled: bool = Field(
        description="No progress for 60 s with messages waiting, or no report from a worker for 30 s"
    )
    moved_age_seconds: float = Field(description="Since the committed offset last moved (or lag was 0)")
    report_age_seconds: float = Field(description="Since a worker last reported this partition")


class TopicPartition(BaseModel):
    topic: str
    partition: int


class Readiness(BaseModel):
    status: str = Field(
        description="`ok`, or the first reason not to route reads here: `unavailable` (Redis does not "
        "answer), `incomplete` (the mirror is being refilled), `stalled` (a consumer makes no "
        "progress), `stale` (no write within `max_age`)"
    )
    redis: str = Field(description="`ok`, or the error Redis answered with")
    detail: str | None = Field(None, description="Why the status is not `ok`")
    as_of_ms: int | None = Field(None, description="Event time every partition is mirrored up to")
    behind_ms: int | None = Field(
        None, description="Milliseconds the newest mirrored event time trails the newest ingested"
    )
    mirror_written_age_seconds: float | None = Field(None, description="Since a worker last wrote")
    mirror_complete: bool | None = Field(None, description="Every partition mirrored whole in this epoch")
    missing_partitions: list[int] = Field(
        default_factory=list, description="Internal-topic partitions not mirrored whole yet"
    )
    stalled: list[TopicPartition] = Field(default_factory=list, description="Consumers making no progress")
    lag: list[ConsumerLag] = Field(default_factory=list, description="Every consumed partition's lag")
