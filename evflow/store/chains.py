"""The audit trail's chains: one hash chain per writer, so writers never wait on each other.

Each store writer (one :class:`~evflow.store.batching.WriteQueue`, so one process) appends to a
chain of its own, named at random when it first writes. A record carries its chain's name and
its position there; its hash covers the previous record of that chain
(:func:`~evflow.store.base.chain_hash`), and a chain's first record follows a previous-hash
derived from the chain's name, so records cannot be passed off as another chain's. Every
chain's head (last position and hash) is kept in ``audit_heads``, written in the transaction
that appends to the chain: a chain cut short from its end no longer reaches its head. A new
chain is opened by a record in the ``system`` chain, so a chain removed whole (records and
head) is missed as well. The one chain kept before there were several is the ``legacy`` chain,
its records and hashes unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..audit_kinds import AuditKind
from ..errors import StoreError
from .base import GENESIS_HASH, AuditEntry, chain_hash

__all__ = [
    "LEGACY_CHAIN",
    "SYSTEM_CHAIN",
    "Appended",
    "WriterChain",
    "append",
    "chain_rows",
    "genesis",
    "system_head",
]

LEGACY_CHAIN = "legacy"
SYSTEM_CHAIN = "system"

log = logging.getLogger("evflow.store")


def genesis(chain: str) -> str:
    """The previous-hash of ``chain``'s first record: zeros for the legacy and system chains
    (the legacy chain's, as it always was), else derived from the chain's name."""
    if chain in (LEGACY_CHAIN, SYSTEM_CHAIN):
        return GENESIS_HASH
    return hashlib.sha256(f"evflow audit chain\x1f{chain}".encode()).hexdigest()


class WriterChain:
    """The chain one writer appends to. ``opened`` once a commit has opened it."""

    __slots__ = ("name", "opened")

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex[:16]
        self.opened = False

    def must_open(self, head: tuple[int, str] | None) -> bool:
        """Whether this batch opens the chain, given its stored ``head`` (None: no head row).

        A head gone although the chain was opened was removed by hand: the writer goes on in a
        new chain rather than write positions its chain already holds (verification names the
        damage)."""
        if head is not None:
            return False
        if self.opened:
            log.error(
                "the head of audit chain %s is gone from the store; going on in a new chain "
                "(`evflow audit verify` names what was removed)",
                self.name,
            )
            self.name = uuid.uuid4().hex[:16]
            self.opened = False
        return True


def system_head(row: Sequence[Any] | None) -> tuple[int, str]:
    """The system chain's head ``(pos, hash)`` as read from the store; its absence means the
    store was altered by hand, and nothing may be appended to the system chain."""
    if row is None:
        raise StoreError(
            "the audit trail's system chain has no head; the store was altered by hand "
            "(run `evflow audit verify`)"
        )
    return int(row[0]), str(row[1])


def chain_rows(
    entries: Sequence[AuditEntry], chain: str, pos: int, head: str, now: float
) -> list[tuple[Any, ...]]:
    """Rows ``(chain, pos, time, kind, subject, actor, data, prev_hash, hash)`` continuing
    ``chain`` from its head ``(pos, head)``; the last row's hash is the new head."""
    rows = []
    now_text = repr(now)  # most records take the batch's time: formatted once
    for entry in entries:
        pos += 1
        t = entry.time if entry.time is not None else now
        data = None if entry.data is None else orjson.dumps(entry.data)
        h = chain_hash(
            head,
            pos,
            t,
            entry.kind,
            entry.subject,
            entry.actor,
            data,
            time_text=now_text if entry.time is None else None,
        )
        rows.append((chain, pos, t, entry.kind, entry.subject, entry.actor, data, head, h))
        head = h
    return rows


@dataclass(slots=True)
class Appended:
    """What appending a batch's records writes: audit rows and the new heads
    ``(chain, pos, hash)``; ``head`` is the writer chain's new head hash."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    heads: list[tuple[str, int, str]] = field(default_factory=list)
    head: str = ""


def append(
    entries: Sequence[AuditEntry],
    chain: WriterChain,
    head: tuple[int, str] | None,
    system: tuple[int, str] | None,
    now: float,
) -> Appended:
    """Append ``entries`` to the writer's chain, whose stored head is ``head`` (None: not yet
    opened; it is opened here, by a record in the system chain, whose head is ``system``)."""
    out = Appended()
    if chain.must_open(head):
        system = system_head(system)
        opening = AuditEntry(
            AuditKind.AUDIT_CHAIN_OPENED,
            f"chain:{chain.name}",
            {"host": socket.gethostname(), "pid": os.getpid()},
            time=now,
        )
        out.rows = chain_rows([opening], SYSTEM_CHAIN, *system, now)
        out.heads.append((SYSTEM_CHAIN, system[0] + 1, out.rows[-1][8]))
        head = (0, genesis(chain.name))
    assert head is not None
    rows = chain_rows(entries, chain.name, *head, now)
    out.rows += rows
    out.head = rows[-1][8]
    out.heads.append((chain.name, rows[-1][1], out.head))
    return out
