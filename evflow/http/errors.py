"""One mapping from what went wrong to what the HTTP answer says: every endpoint (the API, the
webhooks, the health checks) answers errors as ``{"error": message, "status": N}`` with the
status and ``Retry-After`` chosen here."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..errors import (
    EngineNotRunning,
    EventError,
    EventNotFound,
    FlowNotFound,
    ParamError,
    RunNotFound,
    Saturated,
    StoreError,
    StoreUnavailable,
    WebhookRejected,
)
from .responses import OrjsonResponse

__all__ = ["UNAVAILABLE_RETRY_S", "error_for", "error_response"]

UNAVAILABLE_RETRY_S = 5  # Retry-After when the engine is starting, stopping or not running


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> OrjsonResponse:
    """The JSON error body every evflow endpoint uses: ``{"error": message, "status": N}``."""
    return OrjsonResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _retry(exc: Saturated) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}


def error_for(exc: Exception, *, stored: str = "nothing was stored") -> OrjsonResponse | None:
    """The answer for ``exc``, or None if it is not one the caller should hear about (a bug:
    let it raise). ``stored`` ends messages where the request's data was not kept."""
    if isinstance(exc, WebhookRejected):
        return error_response(exc.status, exc.message, headers=exc.headers)
    if isinstance(exc, RunNotFound | EventNotFound | FlowNotFound):
        return error_response(404, str(exc))
    if isinstance(exc, ParamError):
        return error_response(422, str(exc))
    if isinstance(exc, EventError):
        return error_response(400, f"not a valid event: {exc}")
    if isinstance(exc, StoreUnavailable):
        headers = _retry(exc)
        return error_response(
            503,
            f"the store's database cannot be reached; retry after {headers['Retry-After']}s "
            f"({stored})",
            headers=headers,
        )
    if isinstance(exc, Saturated):
        headers = _retry(exc)
        return error_response(
            429,
            f"the engine's backlog is full; retry after {headers['Retry-After']}s ({stored})",
            headers=headers,
        )
    if isinstance(exc, EngineNotRunning | StoreError):
        return error_response(
            503,
            f"the engine cannot serve this now ({exc}); retry later ({stored})",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_S)},
        )
    return None
