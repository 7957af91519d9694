"""API reads shaped for the web UI's pictures, mounted at ``/api`` beside :mod:`.api`.

* ``GET /api/flows/{name}/grid`` — the last N runs of a flow by its tasks, one cell per task
  (a mapped task is one cell with counts by state);
* ``GET /api/flows/{name}/triggers`` — what starts the flow: its schedule with the next fire
  times, and its rules;
* ``GET /api/runs/search`` — runs whose id, flow or params contain some text, paged;
* ``GET /api/runs/{id}/overview`` — a run with its unmapped tasks and, for each mapped task,
  counts by state instead of its instances (so a run of 10,000 instances stays small);
* ``GET /api/runs/{id}/tasks`` — a run's tasks one page at a time (a mapped task's instances);
* ``GET /api/runs/{id}/timeline`` — bars of waiting and running per task, for a Gantt chart.

Every query parameter is bounded and checked; bad input is a JSON 400 naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..cli.display import jsonable_run, jsonable_task
from ..engine import Engine
from ..records import TaskRecord
from ..rules.rule import Rule
from ..states import RunState, TaskState
from ..store.queries import total_from_page
from .api import (
    ApiError,
    Handler,
    JsonResponse,
    _endpoint,
    _int_arg,
    _time_arg,
    authorize,
    jsonable_attempt,
)
from .timeline import MappedSpan, node_state, timeline_rows

__all__ = ["describe_rule", "view_routes"]

MAX_SEARCH_CHARS = 200
MAX_NAME_CHARS = 500
_TASK_STATES = {s.value for s in TaskState}
_RUN_STATES = {s.value for s in RunState}


def _text_arg(request: Request, name: str, max_chars: int = MAX_NAME_CHARS) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_chars:
        raise ApiError(400, f"query parameter {name} is {len(raw)} characters; at most {max_chars}")
    return raw.strip()


def _state_arg(request: Request, name: str, allowed: set[str]) -> str | None:
    if request.query_params.get(name) == "":
        raise ApiError(
            400, f"{name}= is empty; leave it out, or give one of: {', '.join(sorted(allowed))}"
        )
    value = _text_arg(request, name, 40)
    if value is not None and value not in allowed:
        raise ApiError(
            400, f"{name}={value!r} is not a state; one of: {', '.join(sorted(allowed))}"
        )
    return value


def describe_rule(rule: Rule) -> dict[str, Any]:
    """A rule as plain data: what it listens to, matches and maps, and its policy."""
    on = rule.on
    if on is None:
        listens = None
    elif isinstance(on, str):
        listens = on
    else:
        describe = getattr(on, "describe", None)
        listens = describe() if callable(describe) else getattr(on, "source", repr(on))
    policy = "immediate"
    if rule.debounce_s is not None:
        policy = f"debounce {rule.debounce_s:g}s"
    elif rule.batch is not None:
        policy = f"batch {rule.batch!r}"
    elif rule.correlate is not None:
        policy = f"correlate {rule.correlate!r}"
    return {
        "name": rule.name,
        "on": listens,
        "match": rule.match,
        "params": rule.params,
        "policy": policy,
        "when_running": rule.when_running,
        "priority": rule.priority,
    }


def _cells(rows: list[tuple[str, str, str, int, int, bool]]) -> dict[str, dict[str, Any]]:
    """Per run, per node: counts by state, highest attempt, and the state the cell shows.

    A mapped task that has instances is counted by them (its own record is left out)."""
    expanded = {(r[0], r[1]) for r in rows if r[5]}
    counts: dict[tuple[str, str], Counter[str]] = {}
    tries: dict[tuple[str, str], int] = {}
    for run_id, node, state, n, attempt, mapped in rows:
        key = (run_id, node)
        if key in expanded and not mapped:
            continue
        counts.setdefault(key, Counter())[state] += n
        tries[key] = max(tries.get(key, 0), attempt)
    out: dict[str, dict[str, Any]] = {}
    for (run_id, node), c in counts.items():
        out.setdefault(run_id, {})[node] = {
            "state": node_state(c),
            "counts": dict(c),
            "total": sum(c.values()),
            "attempt": tries[(run_id, node)],
            "mapped": (run_id, node) in expanded,
        }
    return out


MAX_RESULT_BYTES = 16_384


def _trimmed(t: TaskRecord) -> dict[str, Any]:
    """A task as JSON; a result larger than :data:`MAX_RESULT_BYTES` is left out (its size
    says so), so that a run page stays small when a task returns a large value."""
    if t.result is not None and len(t.result) > MAX_RESULT_BYTES:
        out = jsonable_task(replace(t, result=None))
        out["result_bytes"] = len(t.result)
        return out
    return jsonable_task(t)


# One row of Store.mapped_summary: node, state, count, highest attempt, first queued, first
# started, last ended, running.
_Summary = tuple[str, str, int, int, float | None, float | None, float | None, int]


def _spans(rows: list[_Summary]) -> list[MappedSpan]:
    """Each mapped task's span and counts from its instances' summary by state."""
    by_node: dict[str, list[_Summary]] = {}
    for r in rows:
        by_node.setdefault(r[0], []).append(r)
    return [
        MappedSpan(
            node,
            _least(r[4] for r in group),
            _least(r[5] for r in group),
            _most(r[6] for r in group),
            sum(r[7] for r in group),
            {r[1]: r[2] for r in group},
        )
        for node, group in sorted(by_node.items())
    ]


def _least(values: Iterable[float | None]) -> float | None:
    return min((v for v in values if v is not None), default=None)


def _most(values: Iterable[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


def view_routes(engine: Engine, *, open_reads: bool = True) -> list[BaseRoute]:
    """The UI's read routes for ``engine``, to mount at ``/api`` before :func:`api_routes`."""

    def read(fn: Handler) -> Handler:
        if open_reads:
            return _endpoint(fn)

        async def guarded(request: Request) -> Response:
            authorize(request)
            return await fn(request)

        guarded.__name__ = fn.__name__
        return _endpoint(guarded)

    async def grid(request: Request) -> Response:
        fl = engine.flow(request.path_params["name"])
        n = _int_arg(request, "runs", 20, lo=1, hi=100)
        store = engine.store
        runs = await store.list_runs(flow=fl.name, limit=n)
        cells = _cells(await store.task_counts([r.id for r in runs]))
        described = fl.describe()
        nodes = [
            {"name": t["name"], "mapped": t["mapped"], "upstream": t["upstream"]}
            for t in described["tasks"]
        ]
        known = {t["name"] for t in nodes}
        for run_cells in cells.values():
            for node in run_cells:
                if node not in known:  # a task of an older version of the flow
                    known.add(node)
                    nodes.append({"name": node, "mapped": False, "upstream": []})
        out = []
        for r in runs:
            item = jsonable_run(r, tasks=False)
            item["cells"] = cells.get(r.id, {})
            out.append(item)
        return JsonResponse({"flow": fl.name, "tasks": nodes, "runs": out, "limit": n})

    async def triggers(request: Request) -> Response:
        fl = engine.flow(request.path_params["name"])
        n = _int_arg(request, "fires", 5, lo=1, hi=50)
        rules = [describe_rule(r) for r in engine.rules if r.flow == fl.name]
        schedule = None
        if fl.schedule is not None:
            now = engine.clock.now()
            fires: list[datetime] = []
            t = now
            for _ in range(n):
                t = fl.schedule.next_after(t)
                fires.append(t)
            schedule = {
                "describe": fl.schedule.describe(),
                "misfire": fl.misfire,
                "now": now.isoformat(),
                "next": [f.isoformat() for f in fires],
                # False when the flow was added with schedule=False: the times are not fired
                "active": any(r["name"] == f"schedule:{fl.name}" for r in rules),
            }
        return JsonResponse({"flow": fl.name, "schedule": schedule, "rules": rules})

    async def search(request: Request) -> Response:
        text = _text_arg(request, "q", MAX_SEARCH_CHARS)
        flow = _text_arg(request, "flow")
        state = _state_arg(request, "state", _RUN_STATES)
        since, until = _time_arg(request, "since"), _time_arg(request, "until")
        limit = _int_arg(request, "limit", 50, lo=1, hi=500)
        offset = _int_arg(request, "offset", 0, hi=10_000_000)
        store = engine.store
        if text is None:
            runs = await store.list_runs(
                flow=flow, state=state, since=since, until=until, limit=limit, offset=offset
            )
            total = total_from_page(len(runs), limit, offset)
            if total is None:
                total = await store.count_runs(flow=flow, state=state, since=since, until=until)
        else:
            runs, total = await store.search_runs(
                text, flow=flow, state=state, since=since, until=until, limit=limit, offset=offset
            )
        return JsonResponse(
            {
                "runs": [jsonable_run(r, tasks=False) for r in runs],
                "total": total,
                "limit": limit,
                "offset": offset,
                "q": text,
            }
        )

    async def overview(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"], with_tasks=False)
        out = jsonable_run(run, tasks=False)
        plain = await store.list_tasks(run.id, mapped=False, limit=100_000)
        counts = _cells(await store.task_counts([run.id])).get(run.id, {})
        # A mapped task's own record stays in "tasks"; its instances are counted, not listed.
        mapped_nodes = {node: cell for node, cell in counts.items() if cell["mapped"]}
        out["tasks"] = [_trimmed(t) for t in plain]
        out["mapped"] = mapped_nodes
        plain_names = {t.name for t in plain}
        attempts = await store.list_attempts_of(run.id, sorted(plain_names))
        out["attempts"] = [jsonable_attempt(a) for a in attempts]
        return JsonResponse(out)

    async def tasks(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"], with_tasks=False)
        node = _text_arg(request, "node")
        state = _state_arg(request, "state", _TASK_STATES)
        limit = _int_arg(request, "limit", 100, lo=1, hi=500)
        offset = _int_arg(request, "offset", 0, hi=10_000_000)
        # A mapped task's page is its instances (its own record is in the run's overview).
        # Counted on the index, over that node's instances only.
        found = await store.count_tasks(run.id, node=node, mapped=True) if node else 0
        instances = found > 0
        if instances and state is None:
            total = found
        else:
            total = await store.count_tasks(
                run.id, node=node, state=state, mapped=True if instances else None
            )
        page = await store.list_tasks(
            run.id,
            node=node,
            state=state,
            mapped=True if instances else None,
            limit=limit,
            offset=offset,
        )
        return JsonResponse(
            {
                "run_id": run.id,
                "tasks": [jsonable_task(t) for t in page],
                "total": total,
                "limit": limit,
                "offset": offset,
            }
        )

    async def timeline(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"], with_tasks=False)
        # Only the plain tasks are read whole; mapped instances come summed up by the store.
        plain = await store.list_tasks(run.id, mapped=False, limit=100_000)
        names = [t.name for t in plain]
        attempts = await store.list_attempts_of(run.id, names)
        waits = await store.task_waits(run.id, names)
        spans = _spans(await store.mapped_summary(run.id))
        order: list[str] = []
        if run.flow in engine.flows:
            order = [t["name"] for t in engine.flows[run.flow].describe()["tasks"]]
        rows = timeline_rows(plain, attempts, waits, order, spans)
        return JsonResponse(
            {
                "run_id": run.id,
                "state": str(run.state),
                "created_at": run.created_at,
                "started_at": run.started_at,
                "ended_at": run.ended_at,
                "now": engine.clock.now().timestamp(),
                "rows": [r.json() for r in rows],
            }
        )

    return [
        Route("/flows/{name}/grid", read(grid), methods=["GET"]),
        Route("/flows/{name}/triggers", read(triggers), methods=["GET"]),
        Route("/runs/search", read(search), methods=["GET"]),
        Route("/runs/{id}/overview", read(overview), methods=["GET"]),
        Route("/runs/{id}/tasks", read(tasks), methods=["GET"]),
        Route("/runs/{id}/timeline", read(timeline), methods=["GET"]),
    ]
