"""The OpenAPI 3.1 document of the JSON API (``GET /openapi.json``), generated.

Nothing here is written per route: :mod:`.operations` lists each operation compactly (its
parameters, body and answers by type), the shapes are the ``TypedDict`` classes of
:mod:`.schemas` and :mod:`.bodies`, and msgspec turns those classes into the document's
component schemas. The handlers build their answers from the same classes, so the document
cannot drift from what is sent; ``tests/faults/test_openapi_conformance.py`` checks the live
service against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .. import __version__
from ..frozen import record
from .schemas import Error

__all__ = ["Op", "Param", "SseEvent", "openapi_document"]

_COMPONENTS = "#/components/schemas/{name}"

ERROR_TEXTS = {
    400: "Bad input",
    401: "Missing or wrong API token",
    403: "Refused: no API token is configured and the client is not on loopback",
    404: "Not found",
    409: "Conflict with the run's state",
    413: "Body too large",
    422: "Refused values",
    429: "Backlog full; retry after the Retry-After header's seconds",
    503: "Engine not running; retry later",
}


@record
class Param:
    """One parameter of an operation: in the query (the default), the path or a header."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "schema": self.schema,
            "description": self.description,
        }


@record
class SseEvent:
    """One kind of Server-Sent Event of a stream: its name, the type of its JSON data, and
    whether it carries an id (a position to resume from with ``Last-Event-ID``)."""

    name: str
    data: Any
    with_id: bool = False


@record
class Op:
    """One operation: ``answer`` is the type of the success body (JSON), ``stream`` the events
    of a ``text/event-stream`` answer (alone, or besides the JSON with ``answer``)."""

    method: str
    path: str
    summary: str
    answer: Any = None
    status: int = 200
    answer_text: str = "OK"
    params: Sequence[Param] = ()
    body: Any = None
    body_required: bool = True
    errors: Sequence[int] = ()
    secured: bool = False
    description: str | None = None
    stream: Sequence[SseEvent] = ()
    media: str = "application/json"

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


class _Schemas:
    """The types the operations name, turned into schemas by msgspec in one pass."""

    def __init__(self, ops: Iterable[Op]) -> None:
        types: list[Any] = [Error]
        for op in ops:
            types.extend(t for t in (op.answer, op.body) if t is not None)
            types.extend(e.data for e in op.stream)
        unique = list(dict.fromkeys(types))
        refs, components = msgspec.json.schema_components(unique, ref_template=_COMPONENTS)
        self.components: dict[str, Any] = _compact(components)
        self._refs: dict[Any, dict[str, Any]] = dict(zip(unique, _compact(refs), strict=True))

    def __call__(self, tp: Any) -> dict[str, Any]:
        return self._refs[tp]


def _compact(schema: Any) -> Any:
    """``schema`` with each "X or null" written as one schema of ``"type": [X, "null"]``, as
    the document always wrote them (and as generators of test requests read them best)."""
    if isinstance(schema, list):
        return [_compact(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _compact(v) for k, v in schema.items()}
    alternatives = out.get("anyOf")
    if isinstance(alternatives, list) and len(alternatives) == 2:
        null = {"type": "null"}
        other = [a for a in alternatives if a != null]
        if len(other) == 1 and isinstance(other[0].get("type"), str):
            merged = {k: v for k, v in out.items() if k != "anyOf"}
            merged.update(other[0])
            merged["type"] = [other[0]["type"], "null"]
            return merged
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _sse(events: Sequence[SseEvent], schemas: _Schemas) -> dict[str, Any]:
    """A ``text/event-stream`` answer: each event an object of its fields, its data one line
    of JSON (OpenAPI 3.1 describes it with ``contentMediaType`` and ``contentSchema``)."""
    one_of = []
    for e in events:
        fields: dict[str, Any] = {
            "event": {"const": e.name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": schemas(e.data),
            },
        }
        if e.with_id:
            fields["id"] = {"type": "string", "pattern": "^[0-9]+$"}
        one_of.append({"type": "object", "required": ["event", "data"], "properties": fields})
    return {"text/event-stream": {"schema": {"oneOf": one_of}}}


def _operation(op: Op, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.answer is not None:
        content[op.media] = {"schema": schemas(op.answer)}
    if op.stream:
        content.update(_sse(op.stream, schemas))
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.secured:
        out["security"] = [{"bearer": []}]
    if op.params:
        out["parameters"] = [p.document() for p in op.params]
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _json(schemas(op.body))}
    out["responses"] = {
        str(op.status): {"description": op.answer_text, "content": content},
        **{str(c): {"$ref": f"#/components/responses/E{c}"} for c in op.errors},
    }
    return out


def openapi_document(ops: Sequence[Op] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``ops`` (by default every operation of the API)."""
    if ops is None:
        from .operations import OPERATIONS

        ops = OPERATIONS
    schemas = _Schemas(ops)
    paths: dict[str, Any] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    error = schemas(Error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "evflow",
            "version": __version__,
            "description": "Event-driven orchestration: flows, runs, events, logs, audit. "
            "POST calls need 'Authorization: Bearer <api_token>' when a token is configured; "
            "without one they are accepted from loopback clients only.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "responses": {
                f"E{code}": {"description": text, "content": _json(error)}
                for code, text in ERROR_TEXTS.items()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
