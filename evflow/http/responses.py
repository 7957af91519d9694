"""The JSON responses every evflow endpoint answers with, serialised by orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["JsonResponse", "OrjsonResponse"]


class OrjsonResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class JsonResponse(OrjsonResponse):
    """The API's answers: values orjson cannot encode (user-defined defaults, results) become
    strings, and keys that are not strings are written as strings."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)
