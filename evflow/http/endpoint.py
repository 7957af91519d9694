"""What every API handler shares: errors as JSON answers, who may call, and how a handler
becomes an endpoint (reads open or guarded, several methods on one path, SSE answers)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import ApiError, EvflowError
from .errors import error_for, error_response

__all__ = ["ApiError", "Handler", "authorize", "by_method", "endpoint", "reader", "stream"]

Handler = Callable[[Request], Awaitable[Response]]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def authorize(request: Request) -> str:
    """The actor of a call that needs authority; raises 401/403 :class:`ApiError` if none."""
    token: str | None = getattr(request.app.state, "api_token", None)
    ip = _client_ip(request)
    if token:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(
                401,
                "this call needs 'Authorization: Bearer <token>' with the service's "
                "[http] api_token",
                {"WWW-Authenticate": "Bearer"},
            )
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401, "the API token is not valid for this service", {"WWW-Authenticate": "Bearer"}
            )
        return f"token:{hashlib.sha256(token.encode()).hexdigest()[:8]}@{ip}"
    if not _is_loopback(ip):
        raise ApiError(
            403,
            f"state-changing calls from {ip} are refused because no API token is configured; "
            "set [http] api_token in evflow.toml (or EVFLOW_HTTP_API_TOKEN) and send it as "
            "'Authorization: Bearer <token>'",
        )
    return f"anonymous@{ip}"


def endpoint(fn: Handler) -> Handler:
    """Wrap a handler so that every failure becomes a JSON error with the right status."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, headers=exc.headers)
        except EvflowError as exc:
            answer = error_for(exc)
            if answer is None:
                raise
            return answer

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def reader(open_reads: bool) -> Callable[[Handler], Handler]:
    """How read handlers become endpoints: open, or behind :func:`authorize` like writes."""

    def read(fn: Handler) -> Handler:
        if open_reads:
            return endpoint(fn)

        async def guarded(request: Request) -> Response:
            authorize(request)
            return await fn(request)

        guarded.__name__ = fn.__name__
        return endpoint(guarded)

    return read


def by_method(**handlers: Handler) -> Handler:
    """One endpoint for a path served by several methods (``GET=..., POST=...``); the route's
    ``methods`` answers any other with 405 and an ``Allow`` header naming them all."""

    async def wrapped(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return wrapped


def stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    """A Server-Sent Events answer, not cached nor buffered by proxies."""
    return StreamingResponse(body, media_type="text/event-stream", headers=_SSE_HEADERS)
