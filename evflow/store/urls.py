"""Store URLs: which backend a URL names, and how to show it without its password."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

__all__ = ["is_postgres", "mask", "postgres_target", "split_prepare_threshold", "sqlite_path"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@]*@")


def is_postgres(url: str | os.PathLike[str]) -> bool:
    """Whether ``url`` names a PostgreSQL database (else it is a SQLite path or URL)."""
    return isinstance(url, str) and url.lower().startswith(_POSTGRES_SCHEMES)


def mask(url: str) -> str:
    """``url`` with its password shown as ``***`` (in the user part, and as a ``password=``
    query parameter); anything else is returned as it is."""
    masked = _USERINFO.sub(r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", masked)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db``, ``sqlite:////abs/path.db`` or a plain path → a file path."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        return rest[1:] if rest.startswith("/") else rest
    return url


def postgres_target(url: str) -> str:
    """``host:port/db`` of a PostgreSQL URL, for messages (``?`` for a part that does not
    parse)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port: int | str = parts.port or 5432
    except ValueError:
        return "?"
    return f"{host}:{port}{parts.path or '/'}"


def split_prepare_threshold(url: str) -> tuple[str, int | None, str | None]:
    """``url`` without evflow's ``prepare_threshold`` query parameter (libpq does not know it),
    the threshold it asks for (``none``: never prepare statements, as PgBouncer in transaction
    mode before 1.21 needs; a number: prepare a statement after that many runs; absent: 5,
    psycopg's default), and a problem with its value, if any."""
    parts = urlsplit(url)
    if "prepare_threshold=" not in parts.query:
        return url, 5, None
    kept: list[tuple[str, str]] = []
    problem: str | None = None
    found: int | None = 5
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "prepare_threshold":
            kept.append((key, value))
        elif value.lower() in ("none", "off", "never"):
            found = None
        elif value.isdigit():
            found = int(value)
        else:
            problem = f"prepare_threshold={value!r}: use a whole number, or none"
    return parts._replace(query=urlencode(kept, quote_via=quote)).geturl(), found, problem
