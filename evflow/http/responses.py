"""The JSON response every evflow endpoint answers with."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["OrjsonResponse"]


class OrjsonResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
