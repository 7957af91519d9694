"""WebhookSensor: turns authenticated HTTP POSTs into events, acknowledged only after commit.

The sensor decides and authenticates, as functions of the request's headers and body; the HTTP
side (:mod:`evflow.http.hooks`) routes ``POST /hooks/<name>`` to the sensor named ``<name>``,
reads the body and answers. The sensor's :meth:`~WebhookSensor.run` only marks it as listening.

Authentication
    HMAC-SHA256 (``secret``): the sender adds two headers::

        X-Evflow-Timestamp: <unix time in whole seconds, e.g. 1718000000>
        X-Evflow-Signature: sha256=<hex HMAC-SHA256, key = secret (UTF-8),
                                    message = "<timestamp>." (ASCII) + the raw body bytes>

    In Python: ``hmac.new(secret.encode(), f"{ts}.".encode() + body, "sha256").hexdigest()``
    (see :func:`sign`). A timestamp more than ``tolerance_s`` (default 300) seconds away from the
    server's clock is refused, which bounds replays; the dedup key drops replays inside the window.

    Bearer token (``token``): ``Authorization: Bearer <token>``.

    Both are compared in constant time. With both configured, either one is accepted. With
    neither, the hook is open to anyone who can reach the port: :meth:`~WebhookSensor.describe`
    says so and :attr:`~WebhookSensor.authenticated` is false.

Bodies (at most ``max_body_bytes``, default 1 MiB)
    * ``application/json`` (or any ``application/*+json``): plain JSON. The event's type is
      ``event_type`` or ``webhook.<name>``, its data the parsed body.
    * ``application/cloudevents+json``: a CloudEvent in structured mode (one JSON object).
    * CloudEvents binary mode: ``ce-specversion``, ``ce-type``, ``ce-source`` and ``ce-id``
      headers (``ce-subject``, ``ce-time`` and other ``ce-*`` extensions optional, values
      percent-decoded), with a JSON body (or none) as data.

    Every event's ``source`` is the sensor's (``webhook/<name>``), so ``Rule(on=sensor)`` matches
    it; a CloudEvent's own ``source`` is kept in the ``origin`` extension.

Deduplication
    The dedup key is ``webhook:<name>:`` followed by the sender's delivery id (header
    ``X-Delivery-Id``, ``X-GitHub-Delivery`` or ``Idempotency-Key``, kept in the ``delivery``
    extension), else a CloudEvent's ``dedupkey`` or ``<source>/<id>``, else a hash of the body.
    So a retried delivery never makes a second event; to send two identical plain-JSON bodies as
    two events, give them distinct delivery ids.

Answers (always JSON)
    ``202 {"event_id": ..., "duplicate": false|true}`` once the event is committed (a repeat gets
    the first copy's id). Errors are ``{"error": "<what is wrong and what to do>", "status": N}``:
    400 malformed JSON or event, 401 authentication, 404 unknown hook, 413 body too large, 415
    unsupported content type, 429 backlog full and 503 engine not running, both with
    ``Retry-After`` (seconds).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import anyio
import orjson
from anyio.abc import TaskStatus

from ..abc import Accepted, Intake
from ..errors import (
    EngineNotRunning,
    EventError,
    SensorError,
    StoreError,
    StoreUnavailable,
    WebhookRejected,
)
from ..events import Event, body_hash, parse_json
from ..tracing import carrier_of
from .signatures import SCHEMES, SIGNATURE_HEADER, TIMESTAMP_HEADER
from .signatures import sign as _sign

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSensor",
    "sign",
]

log = logging.getLogger("evflow.sensors.webhook")

#: Headers that carry the sender's delivery id, in order of preference.
DELIVERY_HEADERS = ("x-delivery-id", "x-github-delivery", "idempotency-key")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_DELIVERY_ID = 256
_UNAVAILABLE_RETRY_S = 5
_DRAIN_TIMEOUT_S = 10.0
_CE_STRUCTURED = "application/cloudevents+json"
_CE_BATCH = "application/cloudevents-batch+json"
_CE_REQUIRED = ("specversion", "type", "source", "id")


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers that authenticate ``body`` for a hook with ``secret`` (timestamp: now)."""
    return _sign(secret, body, int(time.time()) if timestamp is None else int(timestamp))


Headers = Mapping[str, str]  # names in lower case, as HTTP servers give them


class WebhookSensor:
    """Events from HTTP POSTs to ``/hooks/<name>``; see the module doc for the wire format."""

    def __init__(
        self,
        name: str,
        *,
        secret: str | None = None,
        token: str | None = None,
        scheme: str = "evflow",
        tolerance_s: float = 300,
        max_body_bytes: int = 1_048_576,
        event_type: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SensorError(
                f"webhook sensor {name!r}: the name is a URL path segment; use letters, digits, "
                "'.', '_' and '-' (starting with a letter or digit)"
            )
        where = f"webhook sensor {name!r}"
        if secret is not None and not secret:
            raise SensorError(f"{where}: secret is empty; give a secret or leave it out")
        if token is not None and not token:
            raise SensorError(f"{where}: token is empty; give a token or leave it out")
        if scheme not in SCHEMES:
            raise SensorError(
                f"{where}: unknown signature scheme {scheme!r}; use one of {', '.join(SCHEMES)}"
            )
        if not tolerance_s > 0:
            raise SensorError(f"{where}: tolerance_s must be > 0, not {tolerance_s!r}")
        if max_body_bytes < 1:
            raise SensorError(f"{where}: max_body_bytes must be >= 1, not {max_body_bytes!r}")
        if event_type is not None and not event_type:
            raise SensorError(f"{where}: event_type must not be empty")
        self.name = name
        self.secret = secret
        self.token = token
        self.scheme = scheme
        self.tolerance_s = float(tolerance_s)
        self.max_body_bytes = max_body_bytes
        self.event_type = event_type
        self._intake: Intake | None = None
        self._listening = anyio.Event()
        self._in_flight = 0
        self._drained: anyio.Event | None = None

    # -- Sensor protocol ---------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of this sensor's events."""
        return f"webhook/{self.name}"

    @property
    def path(self) -> str:
        """The URL path the HTTP server routes to this sensor."""
        return f"/hooks/{self.name}"

    @property
    def authenticated(self) -> bool:
        """False if anyone who can reach the server may post to this hook."""
        return self.secret is not None or self.token is not None

    @property
    def listening(self) -> bool:
        """True while :meth:`run` is active, i.e. requests are accepted."""
        return self._intake is not None

    def describe(self) -> str:
        """One line for the startup summary."""
        if self.secret is not None and self.token is not None:
            auth = "hmac or bearer token"
        elif self.secret is not None:
            auth = "hmac"
        elif self.token is not None:
            auth = "bearer token"
        else:
            auth = "OPEN: no secret or token, anyone who can reach the server may post"
        return f"POST {self.path} ({auth})"

    def __repr__(self) -> str:
        return f"WebhookSensor({self.name!r}, {self.describe()})"

    async def run(
        self, intake: Intake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept requests until cancelled; then wait (bounded) for in-flight submits."""
        self._intake = intake
        self._listening.set()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self._intake = None
            self._listening = anyio.Event()
            if self._in_flight:
                # Let accepted requests reach their commit before the engine closes the store.
                self._drained = anyio.Event()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_TIMEOUT_S):
                    await self._drained.wait()
                self._drained = None

    async def wait_listening(self) -> None:
        """Return once :meth:`run` has started (at once if it has)."""
        await self._listening.wait()

    # -- a request ---------------------------------------------------------------------------

    def check_open(self) -> Intake:
        """The intake to submit to; refuses (503) while the sensor is not running."""
        intake = self._intake
        if intake is None:
            raise WebhookRejected(
                503,
                f"webhook {self.name!r} is not accepting requests: the engine is not running "
                "or is shutting down; retry later",
                {"Retry-After": str(_UNAVAILABLE_RETRY_S)},
            )
        return intake

    def decode(self, headers: Headers, body: bytes) -> Event:
        """Authenticate a request and make its event; raises :class:`WebhookRejected`."""
        self._authenticate(headers, body)
        return _with_http_trace_context(self._to_event(headers, body), headers)

    @property
    def too_large(self) -> str:
        return (
            f"body is larger than this hook's limit of {self.max_body_bytes} bytes; send a "
            "smaller body (or raise max_body_bytes)"
        )

    # -- authentication ----------------------------------------------------------------------

    def _authenticate(self, headers: Headers, body: bytes) -> None:
        if not self.authenticated:
            return
        problems: list[str] = []
        if self.secret is not None:
            problem = self._check_signature(headers, body, self.secret)
            if problem is None:
                return
            problems.append(problem)
        if self.token is not None:
            problem = self._check_token(headers, self.token)
            if problem is None:
                return
            problems.append(problem)
        challenge = {"WWW-Authenticate": "Bearer"} if self.token is not None else None
        raise WebhookRejected(401, "; ".join(problems), challenge)

    def _check_signature(self, headers: Headers, body: bytes, secret: str) -> str | None:
        """None if the request's signature (in this hook's scheme) is valid, else the problem."""
        check = SCHEMES[self.scheme][0]
        return check(headers, body, secret, self.tolerance_s, time.time())

    @staticmethod
    def _check_token(headers: Headers, token: str) -> str | None:
        """None if the bearer token is valid, else what is wrong with it."""
        header = headers.get("authorization")
        if header is None:
            return "missing 'Authorization: Bearer <token>' header"
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return "the bearer token is not valid for this hook"
        return None

    # -- decoding ----------------------------------------------------------------------------

    def _to_event(self, headers: Headers, body: bytes) -> Event:
        content_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
        extensions: dict[str, Any] = {}
        delivery = self._delivery_id(headers)
        if delivery is not None:
            extensions["delivery"] = delivery
        try:
            if content_type == _CE_STRUCTURED:
                return self._structured(body, delivery, extensions)
            if content_type == _CE_BATCH:
                raise WebhookRejected(
                    415, "CloudEvents batch mode is not supported; send one event per request"
                )
            if "ce-specversion" in headers:
                if content_type and not _is_json(content_type):
                    raise WebhookRejected(
                        415,
                        f"CloudEvents binary mode needs a JSON body, not {content_type!r}; "
                        "send Content-Type: application/json",
                    )
                return self._binary(headers, body, delivery, extensions)
            if _is_json(content_type):
                return Event(
                    type=self.event_type or self._sender_type(headers) or f"webhook.{self.name}",
                    source=self.source,
                    data=_parse_json(body),
                    dedup_key=self._dedup_key(delivery or body_hash(body)),
                    extensions=extensions,
                )
        except EventError as exc:
            raise WebhookRejected(400, f"not a valid event: {exc}") from None
        raise WebhookRejected(
            415,
            f"unsupported Content-Type {content_type or '(none)'!r}; send application/json, "
            f"{_CE_STRUCTURED}, or a CloudEvent in binary mode (ce-* headers with a JSON body)",
        )

    def _structured(self, body: bytes, delivery: str | None, extensions: dict[str, Any]) -> Event:
        parsed = _parse_json(body)
        if not isinstance(parsed, dict):
            raise WebhookRejected(400, "a structured CloudEvent must be a JSON object")
        if parsed.get("data") is None and isinstance(parsed.get("data_base64"), str):
            parsed["data"] = {"value_b64": parsed["data_base64"]}
        event = Event.from_dict(parsed, default_source=self.source)
        if delivery is not None:
            key = delivery
        elif parsed.get("dedupkey"):
            key = event.dedup_key
        elif parsed.get("id"):
            key = f"{event.source}/{event.id}"
        else:
            key = body_hash(body)
        return self._adopt(event, key, extensions)

    def _binary(
        self, headers: Headers, body: bytes, delivery: str | None, extensions: dict[str, Any]
    ) -> Event:
        attrs: dict[str, Any] = {
            k[3:]: unquote(v) for k, v in headers.items() if k.startswith("ce-") and len(k) > 3
        }
        missing = [f"ce-{a}" for a in _CE_REQUIRED if not attrs.get(a)]
        if missing:
            raise WebhookRejected(
                400, f"CloudEvents binary mode: missing header(s) {', '.join(missing)}"
            )
        attrs["data"] = _parse_json(body) if body.strip() else None
        if attrs["data"] is not None:
            attrs["datacontenttype"] = "application/json"
        event = Event.from_dict(attrs, default_source=self.source)
        key = delivery if delivery is not None else f"{event.source}/{event.id}"
        return self._adopt(event, key, extensions)

    def _adopt(self, event: Event, key: str, extensions: dict[str, Any]) -> Event:
        """``event`` with this sensor's source and dedup key; its own source kept as origin."""
        return replace(
            event,
            source=self.source,
            dedup_key=self._dedup_key(key),
            extensions={**event.extensions, "origin": event.source, **extensions},
        )

    def _dedup_key(self, key: str) -> str:
        return f"webhook:{self.name}:{key}"

    def _sender_type(self, headers: Headers) -> str | None:
        """The event type the sender names (GitHub's ``X-GitHub-Event``), if this scheme has one."""
        if self.scheme == "github":
            kind = headers.get("x-github-event", "").strip()
            return f"github.{kind}" if kind else None
        return None

    def _delivery_id(self, headers: Headers) -> str | None:
        scheme_header = SCHEMES[self.scheme][1]
        names = (scheme_header, *DELIVERY_HEADERS) if scheme_header else DELIVERY_HEADERS
        for name in names:
            value = headers.get(name)
            if value is not None and value.strip():
                value = value.strip()
                if len(value) > _MAX_DELIVERY_ID:
                    raise WebhookRejected(
                        400, f"the {name} header is longer than {_MAX_DELIVERY_ID} characters"
                    )
                return value
        return None

    # -- intake ------------------------------------------------------------------------------

    async def submit(self, intake: Intake, event: Event) -> Accepted:
        """Store ``event``; returns after commit. In flight until then, so a stopping sensor
        waits for it. Intake's refusals (backlog full, store away) propagate as they are."""
        if self._intake is not intake:  # stopped while the body was read
            raise WebhookRejected(
                503,
                "the engine is shutting down; retry later",
                {"Retry-After": str(_UNAVAILABLE_RETRY_S)},
            )
        self._in_flight += 1  # counted with no await since the check, so run() drains it
        try:
            (accepted,) = await intake.submit([event])
            return accepted
        except (EngineNotRunning, StoreError) as exc:
            if not isinstance(exc, StoreUnavailable):  # that one is said once, by the store
                log.warning("webhook %s: could not store an event: %s", self.name, exc)
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()


def _with_http_trace_context(event: Event, headers: Headers) -> Event:
    """The request's W3C ``traceparent``/``tracestate`` headers as the event's trace context,
    unless the event carries its own (the CloudEvents distributed-tracing attribute)."""
    if "traceparent" in event.extensions:
        return event
    found = carrier_of(headers)
    if not found:
        return event
    return replace(event, extensions={**event.extensions, **found})


def accepted_json(accepted: Accepted) -> dict[str, Any]:
    """The 202 answer for an accepted event: its id, whether it was a repeat, and where its
    rule decisions and the runs they started appear."""
    return {
        "event_id": accepted.event_id,
        "duplicate": accepted.duplicate,
        "url": f"/api/events/{accepted.event_id}",
    }


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise WebhookRejected(400, "the body is empty; send a JSON document")
    try:
        return parse_json(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookRejected(400, f"the body is not valid JSON: {exc}") from None
    except EventError as exc:
        raise WebhookRejected(400, str(exc)) from None
