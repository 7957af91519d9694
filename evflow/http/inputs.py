"""Reading what a request gives: its JSON body (bounded), and query parameters and body values
as whole numbers, times and flags, each bad value a 400 or 422 :class:`ApiError` naming it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from ..errors import EventError
from ..events import parse_json
from .endpoint import ApiError
from .schemas import INT_MAX

__all__ = [
    "MAX_BODY_BYTES",
    "NO_BODY",
    "as_object",
    "bounded_int",
    "int_arg",
    "iso",
    "optional_str",
    "parse_when",
    "present",
    "read_json",
    "time_arg",
    "wants_stream",
    "whole",
]

MAX_BODY_BYTES = 1 << 20


class _NoBody:
    """The marker of an empty request body (unlike a body of JSON ``null``)."""


NO_BODY = _NoBody()


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request body as JSON (:data:`NO_BODY` for an empty body when not ``required``)."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    body = b"".join(chunks)
    if not body:
        if required:
            raise ApiError(400, "the body is empty; send a JSON object")
        return NO_BODY
    if not body.strip():  # not empty, yet no JSON in it: a client's mistake, not "no body"
        raise ApiError(400, "the body holds only whitespace; send a JSON object or no body")
    try:
        return parse_json(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except EventError as exc:
        raise ApiError(400, str(exc)) from None


def as_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object: an empty body is ``{}``, anything else not an object a 400."""
    if body is NO_BODY:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}")
    return body


def int_arg(request: Request, name: str, default: int, *, lo: int = 0, hi: int = INT_MAX) -> int:
    """Query parameter ``name`` as a whole number in ``[lo, hi]``, ``default`` when absent."""
    raw = present(request, name)
    return bounded_int(raw, f"query parameter {name}", default, lo, hi)


def present(request: Request, name: str) -> str | None:
    """Query parameter ``name``, None when absent; given but empty (``limit=``) or given more
    than once (``limit=1&limit=2``: which one was meant?) is a 400."""
    given = request.query_params.getlist(name)
    if len(given) > 1:
        raise ApiError(400, f"query parameter {name} is given {len(given)} times; give it once")
    raw = given[0] if given else None
    if raw is not None and raw.strip(_BLANKS) == "":
        raise ApiError(400, f"query parameter {name} is empty; give a value or leave it out")
    return raw


def whole(
    body: Mapping[str, Any], key: str, default: int | None, *, status: int = 422
) -> int | None:
    """``body[key]`` as a whole number (``26.0`` counts, as in JSON Schema), ``default`` when
    absent; anything else an error with ``status``."""
    if key not in body:
        return default
    value = body[key]
    if isinstance(value, float) and value.is_integer() and abs(value) <= INT_MAX:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(status, f"'{key}' must be a whole number, not {value!r}")
    return value


def optional_str(body: Mapping[str, Any], key: str, *, status: int = 422) -> str | None:
    """``body[key]`` when it is a string, None when absent; anything else (null too) an
    error with ``status``."""
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str):
        raise ApiError(status, f"'{key}' must be a string, not {value!r}")
    return value


#: A whole number as a query string writes it: ASCII digits, an optional sign.
_WHOLE = re.compile(r"[+-]?[0-9]+")

#: Blanks around a query value that are ignored: spaces and tabs, not every Unicode separator.
_BLANKS = " \t"


def bounded_int(raw: str | None, what: str, default: int, lo: int, hi: int) -> int:
    """``raw`` as a whole number in ``[lo, hi]`` (``default`` when absent or empty), else a 400
    naming ``what``."""
    text = "" if raw is None else raw.strip(_BLANKS)
    if not text:
        return default
    if len(text) > 20:  # longer than any number in range: refuse before converting
        raise ApiError(400, f"{what}={text[:24]!r}… must be a whole number between {lo} and {hi}")
    if _WHOLE.fullmatch(text) is None:  # int() would also take "1_000", full-width digits, "3\x1e"
        raise ApiError(400, f"{what}={raw!r} is not a whole number")
    value = int(text)
    if not lo <= value <= hi:
        raise ApiError(400, f"{what}={value} must be between {lo} and {hi}")
    return value


def parse_when(raw: str, name: str) -> float:
    """Unix seconds from unix seconds or an ISO 8601 time (UTC when it has no offset)."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ApiError(400, f"{name}={raw!r} is not a finite number of seconds")
        return value
    try:
        return iso(text).timestamp()
    except ValueError:
        raise ApiError(
            400,
            f"{name}={raw!r} is neither an ISO 8601 time (e.g. 2026-01-31T12:00:00Z) "
            "nor unix seconds",
        ) from None


def iso(text: str) -> datetime:
    """An ISO 8601 time, UTC when it has no offset (``ValueError`` when it is not one)."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def time_arg(request: Request, name: str) -> float | None:
    """Query parameter ``name`` as unix seconds (see :func:`parse_when`), None when absent."""
    raw = present(request, name)
    return None if raw is None else parse_when(raw, name)


_FOLLOW = {"1": True, "true": True, "0": False, "false": False}


def wants_stream(request: Request) -> bool:
    """Whether the caller asked for Server-Sent Events (``follow=1`` or by ``Accept``)."""
    raw = present(request, "follow")
    if raw is not None:
        follow = _FOLLOW.get(raw.strip().lower())
        if follow is None:
            raise ApiError(400, f"follow={raw!r}: use follow=1 to stream, follow=0 not to")
        if follow:
            return True
    return "text/event-stream" in request.headers.get("accept", "")
