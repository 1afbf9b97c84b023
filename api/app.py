"""The read API's app factory."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from breakout import __version__
from breakout.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app serving breakout snapshots for ``settings``."""
    app = FastAPI(
        title="Breakout read API",
        version=__version__,
        default_response_class=ORJSONResponse,
    )
    app.state.settings = settings

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run_api(settings: Settings) -> None:
    """``breakout api``: serve the read API with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        loop="uvloop",
    )
