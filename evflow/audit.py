"""The tamper-evident audit trail: verification and export.

Each audit record carries the hash of the previous one (see
:func:`~evflow.store.base.chain_hash`). Verification recomputes the chain from the first record;
the first record whose stored hashes disagree — edited, deleted, inserted or reordered — is
named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from .store import Store, connect
from .store.base import GENESIS_HASH, chain_hash

__all__ = ["VerifyResult", "export", "export_path", "verify", "verify_path"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str | None = None


async def verify(store: Store) -> VerifyResult:
    """Recompute the hash chain over the whole trail."""
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    after = 0
    while True:
        rows = await store.audit_rows(after_seq=after)
        if not rows:
            return VerifyResult(True, checked)
        for seq, t, kind, subject, actor, data, prev_hash, stored in rows:
            if seq != expected_seq:
                return VerifyResult(
                    False,
                    checked,
                    expected_seq,
                    f"record {expected_seq} is missing (next record is {seq})",
                )
            if prev_hash != prev:
                return VerifyResult(
                    False,
                    checked,
                    seq,
                    "its previous-hash does not match the "
                    "record before it (a record was removed or reordered)",
                )
            if chain_hash(prev, seq, t, kind, subject, actor, data) != stored:
                return VerifyResult(
                    False,
                    checked,
                    seq,
                    f"its content does not match its hash "
                    f"(kind {kind!r}, subject {subject!r} was edited)",
                )
            prev = stored
            expected_seq += 1
            checked += 1
            after = seq


async def verify_path(path: str | os.PathLike[str]) -> VerifyResult:
    async with connect(path) as store:
        return await verify(store)


async def export(store: Store, out: BinaryIO, since: float | None = None) -> int:
    """Write records (from ``since``, a unix time) as JSON lines; returns how many."""
    count = 0
    for rec in await store.list_audit(since=since):
        out.write(
            orjson.dumps(
                {
                    "seq": rec.seq,
                    "time": rec.time,
                    "kind": rec.kind,
                    "subject": rec.subject,
                    "actor": rec.actor,
                    "data": rec.data,
                    "prev_hash": rec.prev_hash,
                    "hash": rec.hash,
                }
            )
            + b"\n"
        )
        count += 1
    return count


async def export_path(path: str | os.PathLike[str], out: BinaryIO, since: float | None) -> int:
    async with connect(path) as store:
        return await export(store, out, since)
