"""JSON responses rendered by orjson: several times faster than the standard encoder on
large snapshots, and it writes ``datetime`` and ``Decimal``-free dicts as they are."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
