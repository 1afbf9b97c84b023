"""The portal page is served by the API app as it is: no build step, nothing from another origin."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

import httpx

from api.app import create_app
from api.portal import STATIC
from breakout import __version__
from breakout.settings import load_settings
from tests.conftest import ROOT

IMPORT = re.compile(r'^import .* from "\./([^"]+)";$', re.MULTILINE)


async def test_the_page_and_its_assets_are_served_from_this_origin() -> None:
    app = create_app(load_settings())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/static/[^"?]+)\?v=([^"]+)"', page.text)
        assert sorted(path for path, _ in assets) == ["/static/portal.css", "/static/portal.js"]
        assert {version for _, version in assets} == {__version__}
        for path, _ in assets:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert "http://" not in response.text and "https://" not in response.text, path
        script = await client.get("/static/portal.js")
        assert script.headers["content-type"].startswith("text/javascript")
        # Modules portal.js imports, and theirs: from this origin too, and named without the
        # page's ?v= version, so revalidated on every load rather than kept stale after an upgrade.
        imported: set[str] = set()
        pending = IMPORT.findall(script.text)
        while pending:
            name = pending.pop()
            if name in imported:
                continue
            imported.add(name)
            module = await client.get(f"/static/{name}")
            assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
            assert module.headers["cache-control"] == "no-cache"
            assert "http://" not in module.text and "https://" not in module.text, name
            pending.extend(IMPORT.findall(module.text))
        assert imported == {"csv-cells.js", "format.js", "trend.js", "causes.js"}
        # Every module there is, is one the page loads: no dead file shipped.
        assert {path.name for path in STATIC.glob("*.js")} == imported | {"portal.js"}
        for element in (
            "destination-select",
            "refresh",
            "auto-refresh",
            "download-csv",
            "as-of",
            "error",
            "trend-chart",
            "trend-resolution",
            "causes-body",
        ):
            assert f'id="{element}"' in page.text, element
        assert "/" not in (await client.get("/openapi.json")).json()["paths"]


def test_every_static_file_is_packaged() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "api"
    ]
    for path in STATIC.iterdir():
        relative = path.relative_to(STATIC.parent).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative
