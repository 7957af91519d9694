"""Schemathesis hooks for the API conformance test (loaded through ``SCHEMATHESIS_HOOKS``).

JSON Schema has no way to say "an integer written without a fraction must fit in 64 bits": the
API refuses such integers anywhere in a body (400, they would not be kept exact), while floats of
any size are fine. Bodies holding one are left out of generation rather than reported as
schema-valid requests refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis

_INT64 = range(-(2**63), 2**63)


def _fits(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value in _INT64
    if isinstance(value, dict):
        return all(_fits(v) for v in value.values())
    if isinstance(value, list):
        return all(_fits(v) for v in value)
    return True


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    """Keep only bodies whose integers all fit in 64 bits."""
    return _fits(body)
