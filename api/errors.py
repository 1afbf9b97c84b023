"""Every error the API answers has one shape, ``{"detail": "<one sentence>"}``, and this module
both produces it and declares it in the OpenAPI reference, so the two cannot disagree.

401: no key, or an unknown one (``api.security``). 403: a key asks beyond its role
(``AccessDenied``). 422: a parameter is invalid (``QueryError``; FastAPI's own validation
errors are turned into the same kind of sentence). 503: Redis does not answer, or the mirror
is incomplete (``IncompleteMirror``): after Redis lost its data the workers refill it within
seconds, and until then a report would show short totals as whole ones, so it is refused
with ``Retry-After`` rather than answered. A 503 with ``Retry-After`` also comes from
``api.admission`` when the process is at capacity.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisClusterException, RedisError

from api.reader import IncompleteMirror
from api.responses import OrjsonResponse
from api.schemas import Error
from breakout.errors import QueryError
from breakout.query import AccessDenied

RETRY_AFTER_SECONDS = 2

_DESCRIPTIONS = {
    401: "No API key, or one this server does not know",
    403: "The key is valid but its role may not see what was asked",
    422: "A parameter is invalid: the detail names it and says why",
    503: "Redis does not answer, or this API process is at capacity (`Retry-After`); try again shortly",
}
_REFILLING = (
    "Redis does not answer, the mirror is being refilled after Redis lost its data (a report "
    "would show partial totals, so none is given), or this API process is at capacity: try "
    "again after `Retry-After` seconds"
)
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
}


def error_responses(*statuses: int, refilling: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error statuses. ``refilling``: the route sums
    mirror rows, so its 503 also means an incomplete mirror, with ``Retry-After``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"model": Error, "description": _DESCRIPTIONS[status]}
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        if status == 503 and refilling:
            response["description"] = _REFILLING
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before asking again; sent while the mirror is "
                    "refilled and while the API is at capacity",
                    "schema": {"type": "integer"},
                }
            }
        responses[status] = response
    return responses


def install_error_handlers(app: FastAPI) -> None:
    """Answer each kind of refusal with its status and one ``detail`` sentence."""

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> OrjsonResponse:
        return OrjsonResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(AccessDenied)
    async def access_denied(request: Request, exc: AccessDenied) -> OrjsonResponse:
        return OrjsonResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        problems = []
        for error in exc.errors():
            if error.get("type") == "value_error":  # a model's own sentence (api.params)
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            where = str(error["loc"][-1]) if error.get("loc") else "request"
            problems.append(f"{where}: {error['msg'].lower()}, got {error.get('input')!r}")
        return OrjsonResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(IncompleteMirror)
    async def incomplete_mirror(request: Request, exc: IncompleteMirror) -> OrjsonResponse:
        return OrjsonResponse(
            {"detail": f"{exc}; no partial totals are served, try again in a few seconds"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def redis_down(request: Request, exc: Exception) -> OrjsonResponse:
        return OrjsonResponse(
            {"detail": f"the Redis mirror is unreachable ({exc}); try again shortly"}, status_code=503
        )

    app.add_exception_handler(RedisError, redis_down)
    app.add_exception_handler(RedisClusterException, redis_down)
