"""A stable hash of an operator's code, folded into the flow's version."""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterable
from typing import Any

__all__ = ["code_fingerprint"]


def code_fingerprint(objs: Iterable[Any]) -> str:
    """A hash of the code of ``objs`` that is stable across processes."""
    h = hashlib.sha256()

    def add(code: types.CodeType) -> None:
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                add(c)
            elif isinstance(c, frozenset):
                h.update(repr(sorted(map(repr, c))).encode())
            else:
                h.update(repr(c).encode())

    for obj in objs:
        code = getattr(obj, "__code__", None)
        if isinstance(code, types.CodeType):
            add(code)
        elif isinstance(obj, str):
            h.update(obj.encode())
        else:
            h.update(type(obj).__qualname__.encode())
    return h.hexdigest()[:16]
