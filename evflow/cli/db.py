"""``evflow db``: the store's schema (``status``, ``upgrade``), moving a deployment's state
to another store (``copy``) and pruning old runs and audit records (``prune``)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from ..audit import verify
from ..errors import ConfigError
from ..service.config import load_config, resolve_store, setting
from ..store import connect, mask
from ..store.copy import copy_store
from ..store.retention import PruneReport, prune
from ..store.schema_status import SchemaStatus, schema_status

__all__ = ["add_db_parser", "cmd_db"]


def _location(args: argparse.Namespace, given: str | None) -> str:
    """The store a ``db`` command acts on: ``given``, else the project's (``EVFLOW_STORE_URL``,
    ``[store] url`` or ``path``)."""
    if given:
        return resolve_store(given, Path.cwd())
    return load_config(args.project or ".").store_location


def _print_status(s: SchemaStatus) -> None:
    print(f"store    {s.backend}  {s.location}")
    print(f"schema   version {s.version} of {s.latest}: {s.state}")


async def _status(args: argparse.Namespace) -> int:
    status = await schema_status(_location(args, args.store))
    _print_status(status)
    if status.exists and status.version == status.latest:
        async with connect(_location(args, args.store)) as store:
            runs = await store.count_runs()
            events = len(await store.list_events(limit=1))  # cheap "any?" on big stores
            print(f"runs     {runs}")
            print(f"events   {'yes' if events else 'none'}")
    return 1 if status.version > status.latest else 0


async def _upgrade(args: argparse.Namespace) -> int:
    where = _location(args, args.store)
    before = await schema_status(where)
    if before.version > before.latest:
        _print_status(before)
        return 1
    async with connect(where):  # opening migrates, under the store's lock
        pass
    after = await schema_status(where)
    if after.version == before.version:
        print(f"{after.location}: schema already at version {after.version}; nothing to do")
    else:
        print(f"{after.location}: schema upgraded from version {before.version} to {after.version}")
    return 0


async def _copy(args: argparse.Namespace) -> int:
    source_at, target_at = _location(args, args.source), _location(args, args.target)
    if source_at == target_at:
        print("evflow: error: --from and --to name the same store", file=sys.stderr)
        return 2
    if not (await schema_status(source_at)).exists:
        print(f"evflow: error: no store at {mask(source_at)} to copy from", file=sys.stderr)
        return 2
    started = time.monotonic()
    print(f"copying {mask(source_at)} → {mask(target_at)}", file=sys.stderr)

    def progress(kind: str, n: int) -> None:
        print(f"  {kind}: {n}", file=sys.stderr)

    async with connect(source_at) as source, connect(target_at) as target:
        report = await copy_store(source, target, progress=progress)
        result = await verify(target)
    copied = ", ".join(f"{n} {kind}" for kind, n in report.counts.items())
    print(f"copied {copied} in {time.monotonic() - started:.1f}s")
    if not result.ok:
        print(
            f"evflow: error: the copy's audit trail does not verify at {result.where}: "
            f"{result.reason}",
            file=sys.stderr,
        )
        return 1
    print(f"audit trail of the copy verified: {result.checked} record(s)")
    return 0


async def _prune(args: argparse.Namespace) -> int:
    where = _location(args, args.store)
    if args.keep_days is not None:
        keep = setting("store", "keep_runs_days", args.keep_days, "--keep-days")
    else:
        keep = load_config(args.project or ".").store.keep_runs_days
    if keep is None:
        raise ConfigError(
            "say how many days to keep: --keep-days N, or keep_runs_days under [store] in "
            "evflow.toml"
        )
    if not (await schema_status(where)).exists:
        print(f"evflow: error: no store at {mask(where)} to prune", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(report: PruneReport) -> None:
        print(f"  {report.runs} run(s), {report.records} audit record(s)", file=sys.stderr)

    async with connect(where) as store:
        report = await prune(store, keep, progress=progress)
    before = datetime.fromtimestamp(report.before, UTC).isoformat(timespec="seconds")
    print(
        f"pruned {report.runs} finished run(s) (with their tasks, attempts and logs) and "
        f"{report.records} audit record(s) from before {before} in "
        f"{time.monotonic() - started:.1f}s; the audit trail's pruned chains are anchored "
        "(`evflow audit verify` checks them)"
    )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    command = {"status": _status, "upgrade": _upgrade, "copy": _copy, "prune": _prune}[args.db_cmd]
    return anyio.run(command, args)


def add_db_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], store_help: str
) -> None:
    p = sub.add_parser(
        "db",
        help="the store's schema, and copying a deployment's state to another store",
        description="Inspect or upgrade the store's schema, or copy everything to another store "
        "(e.g. from SQLite to PostgreSQL).",
    )
    p.set_defaults(fn=cmd_db, client=None)
    dsub = p.add_subparsers(dest="db_cmd", required=True, metavar="status|upgrade|copy|prune")
    status = dsub.add_parser(
        "status",
        help="the schema version of the store, and whether it needs upgrading",
        description="Show which store is used, its schema version against this evflow's, and "
        "its size. Changes nothing. Exit 1 if the store is newer than this evflow.",
    )
    upgrade = dsub.add_parser(
        "upgrade",
        help="apply pending schema migrations (evflow serve also does at start)",
        description="Apply the schema migrations the store lacks, under a lock, so that two "
        "processes never both migrate. `evflow serve` does the same at start.",
    )
    prune_p = dsub.add_parser(
        "prune",
        help="remove finished runs and audit records older than N days",
        description="Remove finished runs created and ended more than N days ago, with their "
        "tasks, attempts and logs, and the audit records from before then. The audit trail "
        "still verifies: each chain that lost records is anchored where it now starts, and "
        "the trail records the pruning. Events, dead letters and cursors are kept (an event's "
        "dedup key keeps a redelivered copy from starting a run again). `evflow serve` does "
        "the same every hour when [store] keep_runs_days is set. Safe while the service runs.",
    )
    prune_p.add_argument(
        "--keep-days",
        metavar="N",
        help="days to keep (default: [store] keep_runs_days of evflow.toml)",
    )
    for parser in (status, upgrade, prune_p):
        parser.add_argument("--store", metavar="STORE", help=store_help)
        parser.add_argument("--project", metavar="DIR", help="project folder (default: .)")
    copy = dsub.add_parser(
        "copy",
        help="copy events, runs, logs, cursors and the audit trail into a new store",
        description="Copy everything in one store into another, empty one (e.g. --from "
        "var/evflow.db --to postgresql://user@host/db), then verify the copy's audit trail. "
        "Stop the service first: the source is read as it is.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="STORE", help="copy from")
    copy.add_argument("--to", dest="target", required=True, metavar="STORE", help="copy into")
    copy.add_argument("--project", metavar="DIR", help="project folder (default: .)")
