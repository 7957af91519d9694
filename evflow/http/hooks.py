"""``POST /hooks/<name>``: a webhook request in, an event stored, the answer out.

The sensor (:class:`~evflow.sensors.webhook.WebhookSensor`) authenticates and decodes, as
functions of headers and body; this reads the body within the hook's limit, submits, and
answers ``202 {"event_id", "duplicate", "url"}`` once the event is committed, or the JSON
error :mod:`evflow.http.errors` chooses.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import EvflowError, WebhookRejected
from ..sensors.webhook import WebhookSensor, accepted_json
from .errors import error_for
from .responses import OrjsonResponse

__all__ = ["answer_hook"]

log = logging.getLogger("evflow.sensors.webhook")


async def answer_hook(sensor: WebhookSensor, request: Request) -> Response:
    """Answer one request to ``sensor``'s hook."""
    try:
        intake = sensor.check_open()
        body = await read_body(request, sensor.max_body_bytes, sensor.too_large)
        event = sensor.decode(request.headers, body)
        accepted = await sensor.submit(intake, event)
    except EvflowError as exc:
        if isinstance(exc, WebhookRejected) and exc.status in (400, 401, 413, 415):
            log.info(
                "webhook %s: %d from %s: %s",
                sensor.name,
                exc.status,
                request.client.host if request.client else "?",
                exc.message,
            )
        answer = error_for(exc, stored="the event was not stored")
        if answer is None:
            raise
        return answer
    return OrjsonResponse(accepted_json(accepted), status_code=202)


async def read_body(request: Request, limit: int, too_large: str) -> bytes:
    """The raw body, refusing (413) more than ``limit`` bytes without buffering it."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise WebhookRejected(400, f"Content-Length {length!r} is not a whole number of bytes")
        if int(length) > limit:
            raise WebhookRejected(413, too_large)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebhookRejected(413, too_large)
            chunks.append(chunk)
    except ClientDisconnect:
        raise WebhookRejected(
            400, "the client disconnected before sending the whole body"
        ) from None
    return b"".join(chunks)
