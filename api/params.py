"""Each read's query parameters, declared once.

FastAPI parses a request's query into these models and refuses a name they do not declare
(``extra="forbid"``); the OpenAPI reference is generated from them; the core's parser
(``breakout.query``) gets their values and owns every other rule and message. One rule the
models cannot say: FastAPI keeps the last of a repeated single-valued parameter, and a
``from`` given twice is a mistake to point out, not a choice to make for the caller, so
``refuse_repeats`` checks it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from breakout.errors import QueryError


class RangeParams(BaseModel):
    """What every read takes: a time range and the rows admitted."""

    model_config = ConfigDict(extra="forbid")

    from_: str | None = Field(
        None,
        alias="from",
        description="First day (YYYY-MM-DD, in `tz`) or ISO datetime on a whole minute. Default: today.",
    )
    to: str | None = Field(
        None,
        description="Last day, inclusive (YYYY-MM-DD), or ISO datetime, exclusive. Default: the `from` day.",
    )
    tz: str | None = Field(None, description="IANA time zone the dates are in. Default: UTC.")
    customer: list[str] = Field([], description="Only these customers (repeatable).")
    destination: list[str] = Field([], description="Only these destinations (repeatable).")
    provider: list[str] = Field([], description="Only these providers (repeatable).")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, given: Any) -> Any:
        """Say which names the endpoint takes (``extra="forbid"`` alone would say only "not permitted")."""
        if isinstance(given, dict) and (unknown := [name for name in given if name not in cls.names()]):
            raise ValueError(
                f"unknown parameter {unknown[0]!r}; this endpoint takes {', '.join(cls.names())}"
            )
        return given

    def values(self) -> dict[str, list[str]]:
        """Every parameter given, by its name in the query, as the core's parser reads them."""
        given: dict[str, list[str]] = {}
        for name, field in type(self).model_fields.items():
            value: Any = getattr(self, name)
            if isinstance(value, list):
                if value:
                    given[field.alias or name] = value
            elif value is not None:
                given[field.alias or name] = [str(value)]
        return given

    @classmethod
    def names(cls) -> list[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]


class SnapshotParams(RangeParams):
    """``GET /v1/breakout``: the range, then grouping, order, paging and format."""

    group_by: str | None = Field(
        None, description="Comma-separated: customer, destination, provider. Default: customer,destination."
    )
    sort: str | None = Field(
        None, description="A column name; `-` in front for descending. Default: the group columns."
    )
    limit: int | None = Field(None, description="Rows per page, 1-10000. Default: 1000.")
    offset: int | None = Field(None, description="Rows to skip. Default: 0.")
    format: str | None = Field(None, description="`json` (default) or `csv`.")


class SeriesParams(RangeParams):
    """``GET /v1/series``: the range, then the resolution and the metrics of each point."""

    resolution: str | None = Field(
        None,
        description="`minute`, `15m`, `hour` or `day`, aligned to `tz`. Default: by the range's length "
        "(minute up to 6 h, 15m up to 2 days, hour up to 35 days, day beyond).",
    )
    metric: list[str] = Field(
        [],
        description="Metrics of each point (repeatable or comma-separated): attempts, connected, asr, ner, "
        "acd, pdd, short_calls, short_pct, duration, dtmf, dtmf_pct. Default: attempts, asr, ner, acd, pdd.",
    )


def refuse_repeats(request: Request, model: type[RangeParams]) -> None:
    """A single-valued parameter given more than once is a 422, not its last value."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        count = len(request.query_params.getlist(key))
        if count > 1 and not isinstance(field.default, list):
            raise QueryError(f"{key}: give it once, not {count} times")
