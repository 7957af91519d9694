"""``evflow cluster``: the instances sharing a store, their heartbeats and the leases they
hold — read from the store, or from a running service with ``--url``."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from ..cluster.status import cluster_status
from ..service.config import load_config, resolve_store
from ..store import connect

__all__ = ["add_cluster_parser", "cmd_cluster"]


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(seconds: float) -> str:
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def render(status: dict[str, Any]) -> str:
    """The status as a terminal table."""
    lines = [f"store      {status['store']}"]
    if status["mode"] == "single" and status["store"].startswith("postgresql"):
        lines.append(
            "mode       one instance, outside any cluster ([cluster] enabled = false; several "
            "instances need cluster mode)"
        )
    elif status["mode"] == "single":
        lines.append(
            "mode       one instance (a SQLite store is one machine's; several instances "
            "need a PostgreSQL store)"
        )
    else:
        total = len(status["instances"])
        lines.append(f"instances  {status['alive']} alive of {total} registered")
        if status.get("unclaimed_runs"):
            lines.append(f"unclaimed  {status['unclaimed_runs']} run(s) waiting for an instance")
    if status["instances"]:
        lines.append("")
        lines.append(
            f"{'INSTANCE':<34} {'STATE':<8} {'HOST':<16} {'PID':>7} {'RUNS':>5}  "
            f"{'HEARTBEAT':<13} {'STARTED (UTC)':<19}  HTTP"
        )
        for i in status["instances"]:
            mark = " *" if i["id"] == status.get("this") else ""
            beat = _ago(i["heartbeat_age_s"]) if i["state"] != "stopped" else "stopped"
            lines.append(
                f"{i['id'] + mark:<34} {i['state']:<8} {i['host'][:16]:<16} {i['pid']:>7} "
                f"{i['runs']:>5}  {beat:<13} {_when(i['started_at']):<19}  {i['http'] or '—'}"
            )
    lines.append("")
    if status["leases"]:
        lines.append(f"{'LEASE':<20} {'HOLDER':<34} {'EPOCH':>5}  EXPIRES IN")
        now = time.time()
        for lease in status["leases"]:
            left = lease["expires_at"] - now
            lines.append(
                f"{lease['name']:<20} {lease['owner'][:34]:<34} {lease['epoch']:>5}  "
                + (f"{left:.0f}s" if left > 0 else "expired")
            )
    else:
        lines.append("no leases held")
    held: dict[tuple[str, str], int] = {}
    for place in status.get("places", []):
        key = (place["name"], place["instance"])
        held[key] = held.get(key, 0) + 1
    if held:
        lines.append("")
        lines.append(f"{'PLACES (LIMITS ACROSS THE CLUSTER)':<40} {'INSTANCE':<34} HELD")
        for (name, instance), n in sorted(held.items()):
            lines.append(f"{name[:40]:<40} {instance[:34]:<34} {n:>4}")
    return "\n".join(lines)


async def _read(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        async with httpx.AsyncClient(base_url=args.url.rstrip("/"), timeout=10.0) as http:
            answer = await http.get("/api/cluster", headers=headers)
        if answer.status_code != 200:
            raise SystemExit(
                f"evflow: error: {args.url} answered {answer.status_code}: "
                f"{answer.text.strip()[:200]}"
            )
        status: dict[str, Any] = answer.json()
        return status
    where = (
        resolve_store(args.store, Path.cwd())
        if args.store
        else load_config(args.project or ".").store_location
    )
    async with connect(where) as store:
        return await cluster_status(store)


def cmd_cluster(args: argparse.Namespace) -> int:
    try:
        status = anyio.run(_read, args)
    except httpx.HTTPError as exc:
        print(f"evflow: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(status, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(status))
    return 0


def add_cluster_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], store_help: str
) -> None:
    p = sub.add_parser(
        "cluster",
        help="the instances sharing the store, their heartbeats and the leases they hold",
        description="Show every evflow instance registered on the store (PostgreSQL): alive, "
        "dead (no heartbeat within its TTL) or stopped, with its host, pid, last heartbeat and "
        "HTTP address, and the leases held. On a SQLite store, one instance runs the work.",
    )
    p.set_defaults(fn=cmd_cluster, client=None)
    p.add_argument("--store", metavar="STORE", help=store_help)
    p.add_argument("--project", metavar="DIR", help="project folder (default: .)")
    p.add_argument("--url", metavar="URL", help="ask a running service instead of the store")
    p.add_argument("--token", metavar="TOKEN", help="the service's API token, if it needs one")
    p.add_argument("--json", action="store_true", help="print JSON")
