"""The portal page: one HTML file, its JavaScript modules and one stylesheet, served as they are.

No build step and nothing fetched at run time from anywhere but this API: the page at ``/``
talks to the ``/v1`` endpoints with the API key the person enters (kept in their browser).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from breakout import __version__

STATIC = Path(__file__).resolve().parent / "static"

# Everything the page loads or calls is on this origin: no CDN, no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class _Revalidated(StaticFiles):
    """Assets a browser revalidates on each load (a 304 while unchanged). The page names
    them with the version, but a module imported by ``portal.js`` (``./csv-cells.js``) is
    named without it, and must not be kept stale across an upgrade either."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_portal(app: FastAPI) -> None:
    """Serve the portal page at ``/`` and its assets under ``/static``."""
    # The version in the asset URLs makes browsers fetch new assets after an upgrade.
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{version}}", __version__)
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
    }

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def portal() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    app.mount("/static", _Revalidated(directory=STATIC), name="static")
