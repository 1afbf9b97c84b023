"""The portal page: one HTML file, one JavaScript module and one stylesheet, served as they are.

No build step and nothing fetched at run time from anywhere but this API: the page at ``/``
talks to the ``/v1`` endpoints with the API key the person enters (kept in their browser).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from breakout import __version__

STATIC = Path(__file__).resolve().parent / "static"

# Everything the page loads or calls is on this origin: no CDN, no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
