"""The ``evflow`` command line.

Every command that reads state takes ``--store PATH`` (default: the project's store from
``evflow.toml``, else ``var/evflow.db``) or ``--url URL`` of a running service; listing
commands take ``--json``. Errors are one line on stderr (exit 2 for bad input, 1 for a failed
run or check) — never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import orjson

from .. import __version__
from ..service.config import load_config
from .display import (
    Progress,
    dump_json,
    fmt_duration,
    fmt_time,
    jsonable_run,
    params_from_pairs,
    render_run,
    table,
)
from ..errors import EvflowError, LoadError
from ..events import Event
from ..flows import Flow
from ..signals import TaskStateChanged
from ..states import RunState
from ..store.base import RunRecord
from ..store.sqlite import SqliteStore

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["main"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# -- helpers --------------------------------------------------------------------------------


def _store_path(args: argparse.Namespace) -> str:
    if getattr(args, "store", None):
        return str(args.store)
    cfg = load_config(getattr(args, "project", None) or ".")
    return str(cfg.store_path)


def _existing_store(args: argparse.Namespace) -> str:
    path = _store_path(args)
    if not Path(path).exists():
        raise CliError(f"no store at {path} (nothing has run yet, or pass --store PATH)")
    return path


def _run_async(fn: Callable[[], Awaitable[int]]) -> int:
    return anyio.run(fn)


class Api:
    """A small JSON client for a running service's API."""

    def __init__(self, url: str, token: str | None) -> None:
        self.base = url.rstrip("/")
        self.token = token or os.environ.get("EVFLOW_API_TOKEN")

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()
            try:
                msg = orjson.loads(detail).get("error", detail.decode())
            except (orjson.JSONDecodeError, AttributeError):
                msg = detail.decode(errors="replace")[:200]
            raise CliError(f"{method} {url}: HTTP {exc.code}: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot reach the service at {self.base}: {exc}") from None
        return orjson.loads(raw) if raw else None


def _api(args: argparse.Namespace) -> Api | None:
    url = getattr(args, "url", None) or os.environ.get("EVFLOW_URL")
    return Api(url, getattr(args, "token", None)) if url else None


def _run_from_json(d: dict[str, Any]) -> RunRecord:
    from ..states import RunState, TaskState
    from ..store.base import TaskRecord

    tasks = tuple(
        TaskRecord(
            run_id=d["id"],
            name=t["name"],
            node=t["node"],
            state=TaskState(t["state"]),
            attempt=t["attempt"],
            map_index=t.get("map_index"),
            queued_at=t.get("queued_at"),
            started_at=t.get("started_at"),
            ended_at=t.get("ended_at"),
            waiting=t.get("waiting"),
            error=t.get("error"),
            traceback=t.get("traceback"),
        )
        for t in d.get("tasks", [])
    )
    return RunRecord(
        id=d["id"],
        flow=d["flow"],
        flow_version=d["flow_version"],
        params=d["params"],
        state=RunState(d["state"]),
        created_at=d["created_at"],
        priority=d.get("priority", 0),
        trigger=d.get("trigger", {}),
        started_at=d.get("started_at"),
        ended_at=d.get("ended_at"),
        waiting=d.get("waiting"),
        error=d.get("error"),
        tasks=tasks,
    )


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{text!r} is not an ISO 8601 date/time (e.g. 2026-01-31T00:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- commands -------------------------------------------------------------------------------


def _local_engine(store: str, flows: Iterable[Flow]) -> Engine:
    """An engine in this process on ``store`` with ``flows`` (no schedules, no resume).

    A pool the config does not size gets as many slots as its largest task takes.
    """
    from ..engine import Engine

    flows = list(flows)
    cfg = load_config(".")
    pools = dict(cfg.pools)
    for fl in flows:
        for node in fl.nodes.values():
            if node.options.pool and node.options.pool not in pools:
                pools[node.options.pool] = max(node.options.slots, 1)
    engine = Engine(
        store, pools=pools, max_tasks=cfg.engine.max_tasks, resume=False, grace_period_s=0
    )
    for fl in flows:
        engine.add(fl, schedule=False)
    return engine


async def _follow(engine: Engine, fl: Flow, run_id: str, out: TextIO) -> RunRecord:
    """Wait for a run of this engine with a live per-task progress display."""
    progress = Progress(fl.name, list(fl.nodes), out)

    def task_state(signal: TaskStateChanged) -> None:
        inst = signal.task
        if inst.run_id == run_id:
            progress.update(
                inst.name,
                inst.node,
                str(inst.state),
                inst.attempt,
                inst.started_at,
                inst.ended_at,
                inst.waiting or inst.error or "",
            )

    engine.signals.subscribe(TaskStateChanged, task_state)
    progress.draw()
    await engine.wait(run_id)
    progress.draw()
    return await engine.store.get_run(run_id)


def _report(record: RunRecord, store: str, out: TextIO) -> None:
    error = f": {record.error}" if record.error else ""
    out.write(f"{record.state} in {fmt_duration(record.duration_s)}{error}\n")
    for t in record.tasks:
        if t.traceback and str(t.state) == "failed":
            out.write(f"\n── {t.name}: {t.error}\n{t.traceback.rstrip()}\n")
            break
    out.write(f"details: evflow show {record.id[:12]} --store {store}\n")


def cmd_run(args: argparse.Namespace) -> int:
    from ..service.loader import load_flow_target

    fl = load_flow_target(args.target)
    try:
        params = params_from_pairs(args.param)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    fl.bind_params(params)  # a bad parameter fails before anything is stored
    store = _store_path(args)
    out = sys.stdout if not args.json else sys.stderr

    async def go() -> int:
        async with _local_engine(store, [fl]) as engine:
            run_id = await engine.submit_run(fl, params, trigger={"kind": "cli"})
            out.write(f"run {run_id} of flow {fl.name} (store {store})\n")
            record = await _follow(engine, fl, run_id, out)
        if args.json:
            dump_json(jsonable_run(record))
        else:
            _report(record, store, out)
        return 0 if record.state is RunState.SUCCEEDED else 1

    return _run_async(go)


def cmd_runs(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        data = api.call(
            "GET", "/api/runs", query={"flow": args.flow, "state": args.state, "limit": args.limit}
        )
        runs = [_run_from_json(r) for r in data["runs"]]
    else:
        path = _existing_store(args)

        async def fetch() -> list[RunRecord]:
            async with SqliteStore(path) as store:
                return await store.list_runs(flow=args.flow, state=args.state, limit=args.limit)

        runs = anyio.run(fetch)
    if args.json:
        dump_json([jsonable_run(r, tasks=False) for r in runs])
        return 0
    if not runs:
        print("no runs" + (f" of flow {args.flow!r}" if args.flow else ""))
        return 0
    table(
        [
            [
                r.id[:12],
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


def cmd_show(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        data = api.call("GET", f"/api/runs/{args.run}")
        if args.json:
            dump_json(data)
            return 0
        render_run(_run_from_json(data))
        return 0
    path = _existing_store(args)

    async def fetch() -> int:
        async with SqliteStore(path) as store:
            run = await store.get_run(args.run)
            logs = await store.list_logs(run.id)
            attempts = await store.list_attempts(run.id)
        if args.json:
            out = jsonable_run(run)
            out["attempts"] = [
                {
                    "task": a.task,
                    "attempt": a.attempt,
                    "state": str(a.state),
                    "started_at": a.started_at,
                    "ended_at": a.ended_at,
                    "error": a.error,
                }
                for a in attempts
            ]
            out["logs"] = [
                {
                    "task": lg.task,
                    "attempt": lg.attempt,
                    "time": lg.time,
                    "level": lg.level,
                    "message": lg.message,
                }
                for lg in logs
            ]
            dump_json(out)
        else:
            render_run(run, logs)
        return 0

    return anyio.run(fetch)


def cmd_logs(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        data = api.call("GET", f"/api/runs/{args.run}/logs", query={"task": args.task})
        lines = data["logs"]
    else:
        path = _existing_store(args)

        async def fetch() -> list[dict[str, Any]]:
            async with SqliteStore(path) as store:
                run = await store.get_run(args.run, with_tasks=False)
                return [
                    {
                        "task": r.task,
                        "attempt": r.attempt,
                        "time": r.time,
                        "level": r.level,
                        "message": r.message,
                    }
                    for r in await store.list_logs(run.id, args.task)
                ]

        lines = anyio.run(fetch)
    if args.json:
        dump_json(lines)
        return 0
    for r in lines:
        print(
            f"{fmt_time(r['time'])} {r['level']:<7} {r['task']} [attempt {r['attempt']}] "
            f"{r['message']}"
        )
    if not lines:
        print("no log lines" + (f" for task {args.task!r}" if args.task else ""))
    return 0


def _list_flows(path: str) -> tuple[dict[str, Any], list[LoadError]]:
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


def _project_flows(args: argparse.Namespace) -> dict[str, Flow]:
    from ..service.loader import load_project

    return load_project(getattr(args, "project", None) or ".").flows


def cmd_cancel(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        data = api.call("POST", f"/api/runs/{args.run}/cancel")
        cancelled = bool(data.get("cancelled"))
    else:
        # In a store: for a run no service is running (queued, or left by a stopped service).
        path = _existing_store(args)

        async def go() -> bool:
            async with _local_engine(path, []) as engine:
                return await engine.cancel(args.run, actor="cli")

        cancelled = anyio.run(go)
    print(f"run {args.run}: " + ("cancelled" if cancelled else "already finished"))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        data = api.call("POST", f"/api/runs/{args.run}/retry")
        print(f"run {data['run_id']} queued again from its failed tasks")
        return 0
    # In a store: run it again here, from its failed tasks, like `evflow run`.
    path = _existing_store(args)
    flows = _project_flows(args)

    async def go() -> int:
        async with SqliteStore(path) as store:
            flow_name = (await store.get_run(args.run, with_tasks=False)).flow
        if flow_name not in flows:
            raise CliError(
                f"run {args.run} is of flow {flow_name!r}, which is not in this "
                "project's flows/ (pass --project)"
            )
        fl = flows[flow_name]
        async with _local_engine(path, [fl]) as engine:
            run_id = await engine.retry(args.run, actor="cli")
            print(f"run {run_id} of flow {fl.name}: retrying its failed tasks")
            record = await _follow(engine, fl, run_id, sys.stdout)
        _report(record, path, sys.stdout)
        return 0 if record.state is RunState.SUCCEEDED else 1

    return _run_async(go)


def cmd_backfill(args: argparse.Namespace) -> int:
    start, end = _parse_time(args.start), _parse_time(args.end)
    api = _api(args)
    if api is not None:
        body = {"start": start.isoformat(), "end": end.isoformat(), "max_active": args.max_active}
        data = api.call("POST", f"/api/flows/{args.flow}/backfill", body)
        if args.json:
            dump_json(data)
        else:
            print(f"{len(data['run_ids'])} run(s) queued for flow {args.flow}")
        return 0
    # In a store: run the slots here, at most --max-active at once.
    flows = _project_flows(args)
    if args.flow not in flows:
        raise CliError(f"no flow {args.flow!r} in this project's flows/ (pass --project)")
    path = _store_path(args)

    async def go() -> int:
        async with _local_engine(path, [flows[args.flow]]) as engine:
            run_ids = await engine.backfill(
                args.flow, start, end, max_active=args.max_active, actor="cli"
            )
            print(f"{len(run_ids)} run(s) of flow {args.flow} to backfill", file=sys.stderr)
            results = [await engine.wait(rid) for rid in run_ids]
        failed = [r.run_id for r in results if not r.ok]
        if args.json:
            dump_json({"run_ids": run_ids, "failed": failed})
        else:
            print(f"{len(results) - len(failed)} succeeded, {len(failed)} failed")
        return 1 if failed else 0

    return _run_async(go)


def cmd_events(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        events = api.call("GET", "/api/events", query={"limit": args.limit, "source": args.source})[
            "events"
        ]
    else:
        path = _existing_store(args)

        async def fetch() -> list[dict[str, Any]]:
            async with SqliteStore(path) as store:
                return [
                    {
                        "id": e.id,
                        "type": e.type,
                        "source": e.source,
                        "subject": e.subject,
                        "time": e.time,
                        "status": e.status,
                        "data": e.data,
                    }
                    for e in await store.list_events(limit=args.limit, source=args.source)
                ]

        events = anyio.run(fetch)
    if args.json:
        dump_json(events)
        return 0
    table(
        [
            [
                e["id"][:12],
                e["type"],
                e["source"],
                e.get("subject") or "",
                e["time"][:19],
                e["status"],
            ]
            for e in events
        ],
        ["event", "type", "source", "subject", "time", "status"],
    )
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
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
    api = _api(args)
    if api is not None:
        res = api.call("POST", "/api/events", event.to_dict())
        print(f"event {res['event_id']} " + ("(duplicate)" if res.get("duplicate") else "accepted"))
        return 0
    path = _store_path(args)

    async def put() -> int:
        async with SqliteStore(path) as store:
            (acc,) = await store.add_events([event])
        note = (
            "(duplicate)" if acc.duplicate else "stored; the service decides it at its next start"
        )
        print(f"event {acc.event_id} {note}")
        return 0

    return anyio.run(put)


def cmd_trigger(args: argparse.Namespace) -> int:
    try:
        params = params_from_pairs(args.param)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    api = _api(args)
    if api is not None:
        res = api.call("POST", f"/api/flows/{args.flow}/runs", {"params": params})
        print(f"run {res['run_id']} queued")
        return 0
    from ..engine import Engine
    from ..service.loader import load_project

    dep = load_project(args.project or ".")
    if args.flow not in dep.flows:
        raise CliError(
            f"no flow {args.flow!r} in {dep.root / 'flows'}; flows: "
            f"{', '.join(sorted(dep.flows)) or 'none'}"
        )
    fl = dep.flows[args.flow]
    fl.bind_params(params)
    path = _store_path(args)

    async def put() -> int:
        engine = Engine(path)
        run = engine._new_run(fl, params, trigger={"kind": "cli"})
        from ..store.base import AuditEntry, Changes

        async with SqliteStore(path) as store:
            await store.apply(
                Changes(
                    runs=[run],
                    tasks=engine._pending_tasks(fl, run),
                    audit=[
                        AuditEntry(
                            "run.queued", f"run:{run.id}", {"flow": fl.name, "trigger": run.trigger}
                        )
                    ],
                ),
                wait=True,
            )
        print(
            f"run {run.id} queued in {path}; the service starts it at its next start "
            "(use --url to start it now)"
        )
        return 0

    return anyio.run(put)


def cmd_audit(args: argparse.Namespace) -> int:
    from .. import audit

    path = _existing_store(args)
    if args.audit_cmd == "verify":
        result = anyio.run(audit.verify_path, path)
        if result.ok:
            print(f"audit trail intact: {result.checked} record(s) verified")
            return 0
        print(f"audit trail BROKEN at record {result.bad_seq}: {result.reason}", file=sys.stderr)
        return 1
    since = _parse_time(args.since).timestamp() if args.since else None
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        count = anyio.run(audit.export_path, path, out, since)
    finally:
        if args.output:
            out.close()
    print(f"{count} audit record(s) written", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..service import serve

    return serve(
        args.project,
        host=args.host,
        port=args.port,
        store=args.store,
        log_format=args.log_format,
        log_level=args.log_level,
    )


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evflow",
        description="Event-driven orchestration: run flows, watch runs, serve a project.",
    )
    p.add_argument("--version", action="version", version=f"evflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
        store: bool = True,
        url: bool = False,
        json: bool = False,
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if store:
            sp.add_argument(
                "--store", help="store file (default: from evflow.toml, else var/evflow.db)"
            )
        if url:
            sp.add_argument(
                "--url", help="a running service, e.g. http://127.0.0.1:8000 (or EVFLOW_URL)"
            )
            sp.add_argument(
                "--token", help="API token for state-changing calls (or EVFLOW_API_TOKEN)"
            )
        if json:
            sp.add_argument("--json", action="store_true", help="print JSON")
        return sp

    sp = add("run", cmd_run, "run one flow to its end with live progress", json=True)
    sp.add_argument(
        "target", metavar="FILE_OR_MODULE:FLOW", help="e.g. flows/etl.py:etl or mypkg.flows:etl"
    )
    sp.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="K=V",
        help="run parameter (value read as JSON if it parses); repeatable",
    )

    sp = add("runs", cmd_runs, "list recent runs", url=True, json=True)
    sp.add_argument("--flow")
    sp.add_argument("--state")
    sp.add_argument("--limit", type=int, default=20)

    sp = add("show", cmd_show, "show a run: tasks, durations, errors, logs", url=True, json=True)
    sp.add_argument("run", help="run id (a unique prefix is enough)")

    sp = add("logs", cmd_logs, "print a run's task logs", url=True, json=True)
    sp.add_argument("run")
    sp.add_argument("task", nargs="?")

    sp = add(
        "flows", cmd_flows, "list the flows found under a folder or file", store=False, json=True
    )
    sp.add_argument("path", nargs="?", default="flows")

    sp = add(
        "validate", cmd_validate, "check flows (and a project's rules) for errors", store=False
    )
    sp.add_argument("path", nargs="?", default=".")

    sp = add("serve", cmd_serve, "run the service: schedules, sensors, rules, HTTP API and UI")
    sp.add_argument(
        "project",
        nargs="?",
        default=None,
        help="project folder with flows/, sensors/ and evflow.toml (default: .)",
    )
    sp.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    sp.add_argument("--port", type=int, help="HTTP port (default 8000; 0 picks a free one)")
    sp.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    sp.add_argument("--log-level", default="INFO")

    sp = add(
        "emit", cmd_emit, "send an event to a running service (--url) or into a store", url=True
    )
    sp.add_argument("type", help="event type, e.g. order.created")
    sp.add_argument("--data", help="event data as JSON")
    sp.add_argument("--source", default="evflow.cli")
    sp.add_argument("--subject")
    sp.add_argument("--id", help="event id (repeats with the same source and id are dropped)")

    sp = add(
        "trigger",
        cmd_trigger,
        "start a flow on a running service (--url) or queue it in a store",
        url=True,
    )
    sp.add_argument("flow")
    sp.add_argument("--param", "-p", action="append", default=[], metavar="K=V")
    sp.add_argument("--project", help="project folder holding the flow (default: .)")

    sp = add("cancel", cmd_cancel, "cancel a run (on a running service with --url)", url=True)
    sp.add_argument("run")
    sp = add(
        "retry",
        cmd_retry,
        "retry a failed run from its failed tasks (on a running service with --url, else here)",
        url=True,
    )
    sp.add_argument("run")
    sp.add_argument("--project", help="project folder holding the flow (default: .)")
    sp = add(
        "backfill",
        cmd_backfill,
        "one run per schedule slot in a time range (on a running service with --url, else here)",
        url=True,
        json=True,
    )
    sp.add_argument("--project", help="project folder holding the flow (default: .)")
    sp.add_argument("flow")
    sp.add_argument("--start", required=True, help="ISO 8601, e.g. 2026-01-01T00:00Z")
    sp.add_argument("--end", required=True)
    sp.add_argument("--max-active", type=int, default=4, help="runs at once (default 4)")

    sp = add("events", cmd_events, "list recent events", url=True, json=True)
    sp.add_argument("--source")
    sp.add_argument("--limit", type=int, default=20)

    sp = add("audit", cmd_audit, "verify or export the tamper-evident audit trail")
    asub = sp.add_subparsers(dest="audit_cmd", required=True, metavar="verify|export")
    ver = asub.add_parser("verify", help="check every record's hash chain")
    ex = asub.add_parser("export", help="write the trail as JSON lines")
    for audit_parser in (ver, ex):
        audit_parser.add_argument(
            "--store", default=argparse.SUPPRESS, help="store file (default: from evflow.toml)"
        )
    ex.add_argument("--since", help="ISO 8601 time")
    ex.add_argument("--output", "-o", help="file (default: stdout)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        logging.basicConfig(
            level=logging.WARNING, format="evflow: %(levelname)s: %(message)s", stream=sys.stderr
        )
    started = time.monotonic()
    try:
        code = int(args.fn(args))
    except CliError as exc:
        print(f"evflow: error: {exc}", file=sys.stderr)
        return 2
    except EvflowError as exc:
        print(f"evflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nevflow: interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
