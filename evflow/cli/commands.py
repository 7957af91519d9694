"""The commands, each written once against a :class:`~evflow.cli.client.Client`.

A command takes the client and its parsed arguments and returns the exit status: 0 on success,
1 for a failed run or check. User errors raise :class:`~evflow.cli.client.CliError` (status 2).
``flows``, ``validate`` and ``serve`` read the project's files and need no client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..errors import EvflowError, LoadError
from ..events import Event
from ..flows import Flow
from ..http.schemas import (
    jsonable_attempt,
    jsonable_event,
    jsonable_log,
    run_with_tasks,
)
from ..records import RunRecord
from ..states import RunState
from .client import Client, CliError
from .display import (
    RunShown,
    dump_json,
    fmt_duration,
    fmt_time,
    jsonable_run,
    params_from_pairs,
    render_run,
    short_id,
    table,
)
from .local_client import LocalClient, retry_what

__all__ = [
    "cmd_audit",
    "cmd_backfill",
    "cmd_cancel",
    "cmd_emit",
    "cmd_events",
    "cmd_flows",
    "cmd_logs",
    "cmd_retry",
    "cmd_run",
    "cmd_runs",
    "cmd_serve",
    "cmd_show",
    "cmd_trigger",
    "cmd_validate",
    "parse_time",
    "prepare_run",
]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from the command line (UTC when it has no offset)."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{text!r} is not an ISO 8601 date/time (e.g. 2026-01-31T00:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    try:
        return params_from_pairs(pairs)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _report(record: RunRecord, client: LocalClient, out: TextIO) -> None:
    error = f": {record.error}" if record.error else ""
    out.write(f"{record.state} in {fmt_duration(record.duration_s)}{error}\n")
    for t in record.tasks:
        if t.traceback and str(t.state) == "failed":
            out.write(f"\n── {t.name}: {t.error}\n{t.traceback.rstrip()}\n")
            break
    out.write(f"details: evflow show {short_id(record.id)} --store {client.path}\n")


# -- runs -----------------------------------------------------------------------------------


def prepare_run(args: argparse.Namespace) -> None:
    """Load the flow and check its parameters before any store is opened or created."""
    from ..service.loader import load_flow_target

    args.loaded_flow = load_flow_target(args.target)
    args.params = parse_params(args.param)
    args.loaded_flow.bind_params(args.params)


@contextmanager
def task_output_captured() -> Iterator[None]:
    """While flows run in this process, their tasks' print() and logging go to their attempt
    logs, not over the progress display."""
    from ..run.capture import capture_task_output

    undo = capture_task_output()
    try:
        yield
    finally:
        undo()


async def cmd_run(client: LocalClient, args: argparse.Namespace) -> int:
    """Run one flow here, to its end, with live progress (after :func:`prepare_run`)."""
    with task_output_captured():
        record = await client.run(args.loaded_flow, args.params)
    if args.json:
        dump_json(jsonable_run(record))
    else:
        _report(record, client, client.out)
    return 0 if record.state is RunState.SUCCEEDED else 1


async def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    runs = await client.list_runs(flow=args.flow, state=args.state, limit=args.limit)
    if args.json:
        dump_json([jsonable_run(r, tasks=False) for r in runs])
        return 0
    if not runs:
        print("no runs" + (f" of flow {args.flow!r}" if args.flow else ""))
        return 0
    table(
        [
            [
                short_id(r.id),
                r.flow,
                str(r.state),
                fmt_time(r.created_at),
                fmt_duration(r.duration_s),
                str(r.trigger.get("kind", "")),
                (r.waiting or r.error or "")[:60],
            ]
            for r in runs
        ],
        ["run", "flow", "state", "created", "duration", "trigger", "note"],
        state_col=2,
    )
    return 0


async def cmd_show(client: Client, args: argparse.Namespace) -> int:
    run = await client.get_run(args.run)
    logs = await client.list_logs(run.id)
    if not args.json:
        render_run(run, logs)
        return 0
    shown: RunShown = {
        **run_with_tasks(run),
        "attempts": [jsonable_attempt(a) for a in await client.list_attempts(run.id)],
        "logs": [jsonable_log(line) for line in logs],
    }
    dump_json(shown)
    return 0


async def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    if args.task:
        run = await client.get_run(args.run)
        names = [t.name for t in run.tasks]
        if args.task not in names and args.task not in {t.node for t in run.tasks}:
            raise CliError(f"run {run.id} has no task {args.task!r}; its tasks: {', '.join(names)}")
    lines = await client.list_logs(args.run, args.task)
    if args.json:
        dump_json([jsonable_log(r) for r in lines])
        return 0
    for r in lines:
        print(f"{fmt_time(r.time)} {r.level:<7} {r.task} [attempt {r.attempt}] {r.message}")
    if not lines:
        print("no log lines" + (f" for task {args.task!r}" if args.task else ""))
    return 0


async def cmd_trigger(client: Client, args: argparse.Namespace) -> int:
    queued = await client.trigger(args.flow, parse_params(args.param))
    if queued.started:
        print(f"run {queued.run_id} queued on {client.where}")
    else:
        print(
            f"run {queued.run_id} queued in {client.where}; nothing runs it yet: it starts "
            "when `evflow serve` runs on this store (or pass --url of a running service)"
        )
    return 0


async def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    cancelled = await client.cancel(args.run)
    print(f"run {args.run}: " + ("cancelled" if cancelled else "already finished"))
    return 0


async def cmd_retry(client: Client, args: argparse.Namespace) -> int:
    with task_output_captured():  # on a store, the run goes again in this process
        retried = await client.retry(args.run, from_task=args.from_task, whole=args.all)
    if retried.record is None:
        what = retry_what(args.from_task, args.all)
        print(f"run {retried.run_id} queued again ({what}) on {client.where}")
        return 0
    assert isinstance(client, LocalClient)
    _report(retried.record, client, sys.stdout)
    return 0 if retried.record.state is RunState.SUCCEEDED else 1


async def cmd_backfill(client: Client, args: argparse.Namespace) -> int:
    start, end = parse_time(args.start), parse_time(args.end)
    with task_output_captured():  # on a store, the runs run in this process
        done = await client.backfill(args.flow, start, end, args.max_active)
    if done.failed is None:
        if args.json:
            dump_json({"run_ids": done.run_ids})
        else:
            print(f"{len(done.run_ids)} run(s) queued for flow {args.flow} on {client.where}")
        return 0
    if args.json:
        dump_json({"run_ids": done.run_ids, "failed": done.failed})
    else:
        print(f"{len(done.run_ids) - len(done.failed)} succeeded, {len(done.failed)} failed")
    return 1 if done.failed else 0


# -- events ---------------------------------------------------------------------------------


async def cmd_events(client: Client, args: argparse.Namespace) -> int:
    decided = await client.list_events(source=args.source, limit=args.limit)
    if args.json:
        dump_json([jsonable_event(d.event, d.decisions) for d in decided])
        return 0
    table(
        [
            [
                short_id(d.event.id),
                d.event.type,
                d.event.source,
                d.event.subject or "",
                d.event.time[:19],
                d.event.status,
                ", ".join(sorted({a.kind for a in d.decisions})),
            ]
            for d in decided
        ],
        ["event", "type", "source", "subject", "time", "status", "decisions"],
    )
    return 0


async def cmd_emit(client: Client, args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data) if args.data is not None else None
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc}") from None
    event = Event(
        type=args.type,
        source=args.source,
        data=data,
        subject=args.subject,
        **({"id": args.id} if args.id else {}),
    )
    accepted = await client.emit(event)
    if accepted.duplicate:
        note = "(duplicate)"
    elif client.starts_runs:
        note = f"accepted by {client.where}"
    else:
        note = (
            f"stored in {client.where}; the rules decide it when `evflow serve` runs on "
            "this store (or pass --url of a running service)"
        )
    print(f"event {accepted.event_id} {note}")
    return 0


# -- audit ----------------------------------------------------------------------------------


async def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    if args.audit_cmd == "verify":
        result = await client.verify_audit()
        if result.ok:
            print(f"audit trail intact: {result.checked} record(s) verified")
            return 0
        print(f"audit trail BROKEN at {result.where}: {result.reason}", file=sys.stderr)
        return 1
    since = parse_time(args.since).timestamp() if args.since else None
    if args.output:
        with open(args.output, "wb") as out:  # noqa: ASYNC230 (export writes blocking)
            count = await client.export_audit(out, since)
    else:
        count = await client.export_audit(sys.stdout.buffer, since)
    print(f"{count} audit record(s) written", file=sys.stderr)
    return 0


# -- the project's files --------------------------------------------------------------------


def _list_flows(path: str) -> tuple[dict[str, Flow], list[LoadError]]:
    from ..service.loader import load_flows

    errors: list[LoadError] = []
    target = Path(path)
    if target.is_dir() and (target / "flows").is_dir():
        target = target / "flows"
    flows = load_flows(target, errors=errors)
    return flows, errors


def cmd_flows(args: argparse.Namespace) -> int:
    flows, errors = _list_flows(args.path)
    if args.json:
        dump_json(
            {"flows": [f.describe() for f in flows.values()], "errors": [str(e) for e in errors]}
        )
    else:
        rows = [
            [
                f.name,
                len(f.nodes),
                f.schedule.describe() if f.schedule else "-",
                f.max_active_runs or "-",
                f.location,
            ]
            for f in flows.values()
        ]
        if rows:
            table(rows, ["flow", "tasks", "schedule", "max runs", "defined at"])
        else:
            print(f"no flows under {args.path}")
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..service.config import load_config
    from ..service.loader import load_project

    base = Path(args.path)
    errors: list[LoadError] = []
    if base.is_dir() and ((base / "flows").is_dir() or (base / "sensors").is_dir()):
        dep = load_project(base, errors=errors)
        flows, rules = dep.flows, dep.rules
        cfg = load_config(base)
    else:
        flows, errors = _list_flows(args.path)
        rules = []
        cfg = load_config(".")
    problems = [str(e) for e in errors]
    engine = Engine(":memory:", pools=cfg.pools)
    for fl in flows.values():
        try:
            engine.add(fl)
        except EvflowError as exc:
            problems.append(str(exc))
    for rule in rules:
        try:
            if rule.flow is not None and rule.flow in engine.flows:
                engine.add_rule(rule.flow, rule)
        except EvflowError as exc:
            problems.append(str(exc))
    for fl in flows.values():
        print(f"ok    flow {fl.name} ({len(fl.nodes)} tasks) {fl.location}")
    for p in problems:
        print(f"error {p}")
    print(f"{len(flows)} flow(s), {len(rules)} rule(s), {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..service.serve import serve

    return serve(
        args.project,
        host=args.host,
        port=args.port,
        store=args.store,
        log_format=args.log_format,
        log_level=args.log_level,
    )
