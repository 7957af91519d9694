"""The tamper-evident audit trail: verification and export.

The trail is several hash chains, one per writer (see :mod:`evflow.store.chains`): each record
carries the hash of the record before it in its chain, and each chain's head is anchored in
the store. Verification reads the heads, then walks the trail in the order it was written and
recomputes every chain; it names the first record edited, deleted, reordered or cut from the
end of its chain, and a chain whose head is gone. Records appended after the heads were read
(a service writing meanwhile) are left for the next verification. A chain whose oldest
records were pruned (:mod:`evflow.store.retention`) is taken up from its anchor, which must be
the one the trail's last ``audit.pruned`` record naming that chain gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from .audit_kinds import AuditKind
from .frozen import record
from .store import Store, connect
from .store.base import chain_hash
from .store.chains import LEGACY_CHAIN, SYSTEM_CHAIN, genesis
from .store.retention import pruned_anchors

__all__ = ["VerifyResult", "export", "export_path", "verify", "verify_path"]

_FIXED = (LEGACY_CHAIN, SYSTEM_CHAIN)


@record
class VerifyResult:
    """The outcome: on failure, the record at fault (``pos`` in ``chain``; ``bad_seq`` its
    place in the whole trail when it is there at all) and why."""

    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str | None = None
    chain: str | None = None
    pos: int | None = None

    @property
    def where(self) -> str:
        """The record at fault, for people."""
        if self.chain is None:
            return "the trail"
        at = f"record {self.pos} of chain {self.chain}" if self.pos else f"chain {self.chain}"
        return at if self.bad_seq is None else f"{at} (trail record {self.bad_seq})"


@dataclass(slots=True)
class _Walk:
    """The state of one verification: each chain's last record checked so far."""

    heads: dict[str, tuple[int, str]]
    anchors: dict[str, tuple[int, str]] = field(default_factory=dict)
    last: dict[str, tuple[int, str, int]] = field(default_factory=dict)  # pos, hash, seq
    opened: dict[str, int] = field(default_factory=dict)  # chain -> seq of its opening
    named: dict[str, tuple[int, str]] = field(default_factory=dict)  # anchors, as last named
    headless: set[str] = field(default_factory=set)
    checked: int = 0

    def bad(self, chain: str, pos: int | None, seq: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, self.checked, seq, reason, chain, pos)

    def step(self, row: tuple[Any, ...]) -> VerifyResult | None:
        seq, t, kind, subject, actor, data, prev_hash, stored, chain, pos = row
        head = self.heads.get(chain)
        if head is None:  # a chain opened after the heads were read, or its head was removed
            self.headless.add(chain)
            return None
        if pos > head[0]:  # appended after the heads were read
            return None
        last_pos, last_hash, _ = self.last.get(chain) or self._start(chain)
        if pos > last_pos + 1:
            return self.bad(
                chain,
                last_pos + 1,
                None,
                f"it is missing (the chain's next record is {pos}, trail record {seq}): it "
                "was deleted, or moved out of order",
            )
        if pos <= last_pos:
            return self.bad(
                chain,
                pos,
                seq,
                f"it comes after record {last_pos} of its chain (records were reordered or "
                "repeated)",
            )
        if prev_hash != last_hash:
            return self.bad(
                chain,
                pos,
                seq,
                "its previous-hash does not match the record before it in its chain (a record "
                "was removed or reordered)",
            )
        if chain_hash(prev_hash, pos, t, kind, subject, actor, data) != stored:
            return self.bad(
                chain,
                pos,
                seq,
                f"its content does not match its hash (kind {kind!r}, subject {subject!r} was "
                "edited)",
            )
        self.last[chain] = (pos, stored, seq)
        if chain == SYSTEM_CHAIN and kind == AuditKind.AUDIT_CHAIN_OPENED:
            self.opened[str(subject).removeprefix("chain:")] = seq
        elif chain == SYSTEM_CHAIN and kind == AuditKind.AUDIT_PRUNED:
            self.named.update(pruned_anchors(orjson.loads(data) if data else None))
        self.checked += 1
        return None

    def _start(self, chain: str) -> tuple[int, str, int]:
        """Where ``chain`` starts: its anchor when its oldest records were pruned."""
        pos, h = self.anchors.get(chain) or (0, genesis(chain))
        return pos, h, 0

    def _anchors_named(self) -> VerifyResult | None:
        """Each anchor is the one the trail last named for its chain, and none was removed."""
        for chain, (pos, h) in sorted(self.anchors.items()):
            if self.named.get(chain) != (pos, h):
                return self.bad(
                    chain,
                    pos + 1,
                    None,
                    f"its anchor (records up to {pos} pruned) is not the one the trail's last "
                    "pruning named for it: the anchor was altered, perhaps to hide records "
                    "removed from the chain's start",
                )
        for chain in sorted(set(self.named) - set(self.anchors)):
            return self.bad(
                chain,
                None,
                None,
                "the chain was pruned, but its anchor is gone: it was removed by hand",
            )
        return None

    def finish(self) -> VerifyResult:
        """Each chain reaches its anchored head; each chain was opened, and is still there."""
        if (bad := self._anchors_named()) is not None:
            return bad
        for chain, (head_pos, head_hash) in sorted(self.heads.items()):
            pos, h, seq = self.last.get(chain) or self._start(chain)
            if pos < head_pos:
                span = f"{pos + 1} to {head_pos}" if head_pos > pos + 1 else f"{head_pos}"
                return self.bad(
                    chain,
                    pos + 1,
                    None,
                    f"the chain was cut short from its end: record(s) {span} are missing (its "
                    f"anchored head is record {head_pos})",
                )
            if h != head_hash:
                return self.bad(
                    chain,
                    pos,
                    seq or None,
                    "it does not match its chain's anchored head (the record or the head was "
                    "altered)",
                )
            if chain not in _FIXED and chain not in self.opened and chain not in self.anchors:
                return self.bad(
                    chain, None, None, "the chain was never opened in the system chain (added)"
                )
        for chain, seq in sorted(self.opened.items()):
            if chain not in self.heads:
                return self.bad(
                    chain,
                    None,
                    None,
                    f"the chain opened by trail record {seq} has no anchored head: its head "
                    "(and perhaps its records) were removed",
                )
        for chain in sorted(self.headless & set(_FIXED)):
            return self.bad(chain, None, None, "the chain's records have no anchored head")
        return VerifyResult(True, self.checked)


async def verify(store: Store) -> VerifyResult:
    """Recompute every chain of the trail, against the heads anchored in the store.

    Retention pruning meanwhile removes records the walk has yet to read; a walk that fails
    while the anchors moved under it is taken again."""
    for _ in range(3):
        anchors = await store.audit_anchors()
        result = await _walk(store, _Walk(await store.audit_heads(), anchors))
        if result.ok or await store.audit_anchors() == anchors:
            return result
    return result


async def _walk(store: Store, walk: _Walk) -> VerifyResult:
    after = 0
    while rows := await store.audit_rows(after_seq=after):
        for row in rows:
            if (bad := walk.step(row)) is not None:
                return bad
        after = int(rows[-1][0])
    return walk.finish()


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
                    "chain": rec.chain,
                    "pos": rec.pos,
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
