"""The PostgreSQL store's own array encoding, read back by a real server: every element type the
batched statements send, with NULLs, empty arrays, non-ASCII text and the integer limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from evflow.store.postgres_arrays import (
    BIGINT,
    BYTEA,
    FLOAT8,
    INT4,
    TEXT,
    TIMESTAMPTZ,
    Encoder,
    arrays,
    encoders,
    register,
)

CASES: list[tuple[Encoder, str, list[Any]]] = [
    (TEXT, "text", ["a", None, "é☃ 𝄞", "", "x" * 10_000]),
    (INT4, "int", [0, -1, 2**31 - 1, -(2**31), 7]),
    (INT4, "int", [1, None, -3]),
    (BIGINT, "bigint", [2**63 - 1, None, -(2**63), 0]),
    (FLOAT8, "float8", [1.5, None, -2.25, 1.7e9 + 0.123456, float("inf")]),
    (BYTEA, "bytea", [b"\x00\xff", None, b"", bytes(range(256))]),
    (
        TIMESTAMPTZ,
        "timestamptz",
        [
            datetime(2026, 12, 4, 13, 0, 0, 123456, tzinfo=UTC),
            None,
            datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        ],
    ),
]


@pytest.fixture
def conn(postgres_url: str) -> Any:
    with psycopg.connect(postgres_url) as conn:
        register(conn.adapters)
        yield conn


@pytest.mark.parametrize(("encode", "cast", "items"), CASES)
def test_each_type_reads_back_as_sent(
    conn: Any, encode: Encoder, cast: str, items: list[Any]
) -> None:
    (got,) = conn.execute(f"SELECT %b::{cast}[]", (encode(items),)).fetchone()
    assert got == items
    (empty,) = conn.execute(f"SELECT %b::{cast}[]", (encode([]),)).fetchone()
    assert empty == []


def test_rows_unnest_back_into_the_same_rows(conn: Any) -> None:
    rows = [("a", 1, None, b"x"), ("b", None, 2.5, None), ("c", 3, 0.0, b"")]
    statement = "SELECT * FROM unnest(%b::text[], %b::int[], %b::float8[], %b::bytea[])"
    assert conn.execute(statement, arrays(rows, statement)).fetchall() == rows
    count = "SELECT count(*) FROM unnest(%b::text[], %b::int[])"
    assert conn.execute(count, arrays([], count)).fetchone() == (0,)


def test_rows_of_another_width_than_the_statement_are_refused() -> None:
    with pytest.raises(ValueError, match="rows of 2 values where the statement takes 3"):
        arrays([("a", 1)], "SELECT * FROM unnest(%b::text[], %b::int[], %b::text[])")


@pytest.mark.parametrize(
    "row",
    [(1, 1), ("a", 2**31), ("a", "1")],
    ids=["a number as text", "an int4 out of range", "text as an int4"],
)
def test_a_value_its_column_cannot_hold_is_a_data_error(row: tuple[Any, Any]) -> None:
    """psycopg's own error for it: the store then fails that write alone, as for any value the
    server refuses."""
    with pytest.raises(psycopg.DataError, match="does not fit its column"):
        arrays([("ok", 1), row], "SELECT * FROM unnest(%b::text[], %b::int[])")


def test_a_cast_without_an_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="no encoder for arrays of numeric"):
        encoders("SELECT * FROM unnest(%b::text[], %b::numeric[])")
