"""The Engine end to end: a real Engine on a real SQLite file, tasks doing real (small) work."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from evflow import Engine, Flow, RunResult, RunState, TaskState, flow, task, unmapped
from evflow.errors import EvflowError, ParamError, UnknownPoolError
from evflow.records import RunRecord, TaskRecord
from tests.engines import new_engine, started
from tests.observers import LIMIT_S, until
from tests.postgres import store_for


async def task_record(engine: Engine, run_id: str, name: str) -> TaskRecord:
    run = await engine.store.get_run(run_id)
    return next(t for t in run.tasks if t.name == name)


def states(result: RunResult) -> dict[str, TaskState]:
    return {name: t.state for name, t in result.tasks.items()}


async def audit_kinds(engine: Engine, subject: str) -> list[str]:
    await engine.store.flush()
    return [a.kind for a in await engine.store.list_audit(subject=subject)]


# -- both definition styles run ------------------------------------------------------------------
async def test_decorator_flow_passes_results_and_params(tmp_path: Path) -> None:
    @task
    async def extract(path: str) -> list[str]:
        return [path, path.upper()]

    @task
    def transform(rows: list[str], suffix: str) -> list[str]:
        return [r + suffix for r in rows]

    @task
    async def load(rows: list[str]) -> int:
        return len(rows)

    @flow
    def etl(path: str, suffix: str = "!") -> None:
        load(transform(extract(path), suffix))

    async with started(tmp_path) as engine:
        engine.add(etl)
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(etl, path="x.csv")
        assert result.ok, result.error
        assert result.params == {"path": "x.csv", "suffix": "!"}
        assert result.result("extract") == ["x.csv", "X.CSV"]
        assert result.result("transform") == ["x.csv!", "X.CSV!"]
        assert result.result("load") == 2
        assert all(t.attempts == 1 for t in result.tasks.values())
        stored = await engine.store.get_run(result.run_id)
        assert stored.flow_version == etl.version
        assert stored.state is RunState.SUCCEEDED


async def test_explicit_flow_passes_upstream_results_as_args(tmp_path: Path) -> None:
    def first() -> int:
        return 2

    def second(first: int) -> int:  # named like its upstream: gets its result
        return first * 10

    def third() -> int:
        return 5

    def total(*parts: int) -> int:
        return sum(parts)

    def report(total: int, label: str) -> str:  # ``label`` is a run parameter
        return f"{label}={total}"

    with Flow("explicit") as dag:
        a, b, c, d, e = task(first), task(second), task(third), task(total), task(report)
        a >> b
        [b, c] >> d >> e

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(dag, label="sum")
    assert result.ok, result.error
    assert result.result("second") == 20
    assert result.result("total") == 25
    assert result.result("report") == "sum=25"


async def test_missing_or_unknown_param_is_refused_at_submit(tmp_path: Path) -> None:
    @task
    def echo(value: str) -> str:
        return value

    @flow
    def needs(value: str) -> None:
        echo(value)

    async with started(tmp_path) as engine:
        engine.add(needs)
        with pytest.raises(ParamError, match="needs parameter 'value'"):
            await engine.submit(needs)
        with pytest.raises(ParamError, match="no parameter 'other'"):
            await engine.submit(needs, value="x", other=1)
        assert await engine.store.count_runs() == 0


async def test_waiting_on_short_runs_never_hangs(tmp_path: Path) -> None:
    # A run can end while ``wait`` reads the store; the waiter must still see the end.
    @task
    async def quick(i: int) -> int:
        return i

    @flow
    def short(i: int) -> None:
        quick(i)

    async with started(tmp_path) as engine:
        with anyio.fail_after(60):
            for i in range(300):
                result = await engine.run(short, i=i)
                assert result.ok and result.result("quick") == i
            got: dict[int, Any] = {}

            async def one(i: int) -> None:
                got[i] = (await engine.run(short, i=i)).result("quick")

            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(one, i)
            assert got == {i: i for i in range(300)}
            ids = [await engine.submit(short, i=i) for i in range(50)]
            results = [await engine.wait(r) for r in ids]
            assert [r.result("quick") for r in results] == list(range(50))
            again = await engine.wait(ids[0][-8:])  # finished long ago; by its id's end
            assert again.run_id == ids[0] and again.ok


# -- execution -----------------------------------------------------------------------------------
async def test_all_ready_tasks_run_at_the_same_time(tmp_path: Path) -> None:
    both_running = anyio.Event()
    arrived = 0

    async def meet() -> str:
        # Neither returns until both are running: if the engine ran them one after the other,
        # the first would wait forever and the run would hit the fail_after below.
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_running.set()
        await both_running.wait()
        return "met"

    def after(left: str, right: str) -> str:
        return left + right

    with Flow("barrier") as dag:
        left = task(meet, name="left")
        right = task(meet, name="right")
        [left, right] >> task(after)

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(dag)
    assert result.ok, result.error
    assert result.result("after") == "metmet"


async def test_sync_tasks_run_in_threads_at_the_same_time(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=LIMIT_S)
    loop_thread = threading.get_ident()

    @task
    def worker(i: int) -> int:
        barrier.wait()  # breaks (and the task fails) unless both threads are here at once
        return threading.get_ident()

    @flow
    def threads() -> None:
        worker(1)
        worker(2)

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(threads)
    assert result.ok, result.error
    idents = {result.result("worker"), result.result("worker_2")}
    assert len(idents) == 2
    assert loop_thread not in idents


async def test_retries_count_attempts_and_wait_at_least_the_backoff(tmp_path: Path) -> None:
    starts: list[float] = []

    @task(retries=3, retry_delay=0.05, retry_backoff=2.0, retry_jitter=0)
    async def flaky() -> int:
        starts.append(time.monotonic())
        if len(starts) <= 2:
            raise RuntimeError(f"boom {len(starts)}")
        return len(starts)

    @flow
    def retrying() -> None:
        flaky()

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(retrying)
        assert result.ok, result.error
        assert result.result("flaky") == 3
        assert result.tasks["flaky"].attempts == 3
        # Lower bounds, not timings: attempt 2 waits >= 0.05 s, attempt 3 >= 0.05 * 2.
        assert starts[1] - starts[0] >= 0.05
        assert starts[2] - starts[1] >= 0.1
        attempts = await engine.store.list_attempts(result.run_id)
        assert [(a.attempt, a.state) for a in attempts] == [
            (1, TaskState.FAILED),
            (2, TaskState.FAILED),
            (3, TaskState.SUCCEEDED),
        ]
        assert attempts[0].error == "RuntimeError: boom 1"
        kinds = await audit_kinds(engine, f"run:{result.run_id}/task:flaky")
        assert kinds.count("task.retrying") == 2
        assert kinds.count("task.running") == 3


async def test_retries_exhausted_fail_the_task_and_the_run(tmp_path: Path) -> None:
    calls = 0

    @task(retries=2, retry_delay=0)
    def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("never works")

    @task
    def after(x: Any) -> None:
        raise AssertionError("must not run after a failed upstream")

    @flow
    def doomed() -> None:
        after(always_fails())

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(doomed)
    assert calls == 3
    assert result.state is RunState.FAILED
    assert result.tasks["always_fails"].state is TaskState.FAILED
    assert result.tasks["always_fails"].attempts == 3
    assert result.tasks["always_fails"].error == "ValueError: never works"
    assert result.tasks["after"].state is TaskState.UPSTREAM_FAILED
    # the error names the task that failed, not the one its failure stopped
    assert result.error == "task(s) failed: always_fails"


async def test_timeout_fails_the_attempt_and_is_retried(tmp_path: Path) -> None:
    entered = 0

    @task(timeout=0.05, retries=1, retry_delay=0)
    async def stuck() -> None:
        nonlocal entered
        entered += 1
        await anyio.sleep_forever()

    @flow
    def slow() -> None:
        stuck()

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(slow)
        assert entered == 2
        t = result.tasks["stuck"]
        assert t.state is TaskState.FAILED
        assert t.attempts == 2
        assert t.error is not None
        assert "TimeoutError" in t.error and "timed out after 0.05s" in t.error
        attempts = await engine.store.list_attempts(result.run_id)
        assert [a.state for a in attempts] == [TaskState.FAILED, TaskState.FAILED]
        assert all(a.error is not None and "TimeoutError" in a.error for a in attempts)


async def test_cancel_a_run_while_a_task_is_blocked(tmp_path: Path) -> None:
    blocking = anyio.Event()

    async def blocker() -> None:
        blocking.set()
        await anyio.sleep_forever()

    def downstream() -> None:
        raise AssertionError("must not run in a cancelled run")

    def further() -> None:
        raise AssertionError("must not run in a cancelled run")

    with Flow("cancellable") as dag:
        task(blocker) >> task(downstream) >> task(further)

    async with started(tmp_path) as engine:
        run_id = await engine.submit(dag)
        with anyio.fail_after(LIMIT_S):
            await blocking.wait()
            assert await engine.cancel(run_id, reason="operator said stop", actor="alice")
            result = await engine.wait(run_id)
        assert result.state is RunState.CANCELLED
        assert result.error == "operator said stop"
        assert states(result) == {
            "blocker": TaskState.CANCELLED,
            "downstream": TaskState.SKIPPED,
            "further": TaskState.SKIPPED,
        }
        assert not await engine.cancel(run_id)  # already finished

        run_audit = await engine.store.list_audit(subject=f"run:{run_id}")
        kinds = [a.kind for a in run_audit]
        assert kinds[-2:] == ["run.cancel_requested", "run.cancelled"]
        requested = run_audit[-2]
        assert requested.actor == "alice"
        assert requested.data == {"reason": "operator said stop"}
        assert (await audit_kinds(engine, f"run:{run_id}/task:blocker"))[-1] == "task.cancelled"
        assert (await audit_kinds(engine, f"run:{run_id}/task:downstream"))[-1] == "task.skipped"
        attempts = await engine.store.list_attempts(run_id)
        assert [(a.task, a.state) for a in attempts] == [("blocker", TaskState.CANCELLED)]


async def test_cancel_a_queued_run(tmp_path: Path) -> None:
    blocking = anyio.Event()
    release = anyio.Event()

    @task
    async def hold(tag: str) -> str:
        if tag == "first":
            blocking.set()
            await release.wait()
        return tag

    @flow(max_active_runs=1)
    def single(tag: str) -> None:
        hold(tag)

    async with started(tmp_path) as engine:
        first = await engine.submit(single, tag="first")
        with anyio.fail_after(LIMIT_S):
            await blocking.wait()
            second = await engine.submit(single, tag="second")
            await until(lambda: _waiting(engine, second))
            assert await engine.cancel(second)
            cancelled = await engine.wait(second)
            release.set()
            done = await engine.wait(first)
        assert done.ok
        assert cancelled.state is RunState.CANCELLED
        assert states(cancelled) == {"hold": TaskState.SKIPPED}
        assert (await audit_kinds(engine, f"run:{second}"))[-1] == "run.cancelled"


# A run's driver is a task of its own: ``submit`` returns once the run is committed and its
# driver spawned, before the driver's first step. What stops the run in that instant (a rule
# that replaces it, the engine stopping) must keep it from executing at all.
def _noted(ran: list[str]) -> Flow:
    @task
    async def note() -> None:
        ran.append("note")

    @flow
    def noted() -> None:
        note()

    return noted


async def test_a_run_cancelled_before_its_driver_starts_never_executes(tmp_path: Path) -> None:
    ran: list[str] = []
    noted = _noted(ran)
    async with started(tmp_path) as engine:
        run_id = await engine.submit(noted)
        engine._runs.replace([run_id], "replaced before it started")  # no await in between
        with anyio.fail_after(LIMIT_S):
            result = await engine.wait(run_id)
        assert ran == []
        assert result.state is RunState.CANCELLED and result.error == "replaced before it started"
        assert states(result) == {"note": TaskState.SKIPPED}
        assert await audit_kinds(engine, f"run:{run_id}") == ["run.queued", "run.cancelled"]


def _ended(engine: Engine, run_id: str) -> Callable[[], Awaitable[bool]]:
    """A probe for ``until``: the run's driver has ended (the run is no longer held here)."""

    async def probe() -> bool:
        return not engine._runs.is_active(run_id)

    return probe


async def test_a_run_not_started_when_the_engine_stops_stays_queued_for_the_next_start(
    tmp_path: Path,
) -> None:
    ran: list[str] = []
    noted = _noted(ran)
    async with started(tmp_path) as engine:
        run_id = await engine.submit(noted)
        engine._runs.stop_all()  # what stopping the engine does, before the driver's first step
        await until(_ended(engine, run_id))  # its driver runs now, and ends at once
        assert (await engine.store.get_run(run_id)).state is RunState.QUEUED
    assert ran == []
    engine = new_engine(tmp_path, noted)
    async with engine:  # resumes the runs left unfinished
        with anyio.fail_after(LIMIT_S):
            result = await engine.wait(run_id)
        assert result.ok, result.error
        assert ran == ["note"]


async def _waiting(engine: Engine, run_id: str) -> RunRecord | None:
    run = await engine.store.get_run(run_id, with_tasks=False)
    return run if run.waiting else None


async def test_branch_skips_the_other_branch_and_what_only_it_leads_to(tmp_path: Path) -> None:
    ran: list[str] = []

    def step(name: str) -> Callable[..., str]:
        def fn(*_: Any) -> str:
            ran.append(name)
            return name

        fn.__name__ = name
        return fn

    def choose() -> str:
        return "left"

    with Flow("branching") as dag:
        c = task(choose, branch=True)
        left, right = task(step("left")), task(step("right"))
        right_only, join = task(step("right_only")), task(step("join"))
        c >> [left, right]
        right >> right_only
        [left, right_only] >> join

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(dag)
    assert result.ok, result.error
    assert states(result) == {
        "choose": TaskState.SUCCEEDED,
        "left": TaskState.SUCCEEDED,
        "right": TaskState.SKIPPED,
        "right_only": TaskState.SKIPPED,
        "join": TaskState.SUCCEEDED,
    }
    assert sorted(ran) == ["join", "left"]


async def test_a_branch_target_not_chosen_is_skipped_despite_other_upstreams(
    tmp_path: Path,
) -> None:
    def choose() -> list[str]:
        return ["left", "also"]

    def other() -> str:
        return "other"

    def left(*_: Any) -> str:
        return "left"

    def also(*_: Any) -> str:
        return "also"

    def right(*_: Any) -> str:
        raise AssertionError("the branch did not choose this task")

    with Flow("branch_with_other_upstream") as dag:
        c, o = task(choose, branch=True), task(other)
        lt, al, rt = task(left), task(also), task(right)
        c >> [lt, al, rt]
        o >> [rt, al]

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(dag)
    assert result.ok, result.error
    assert states(result) == {
        "choose": TaskState.SUCCEEDED,
        "other": TaskState.SUCCEEDED,
        "left": TaskState.SUCCEEDED,
        "also": TaskState.SUCCEEDED,
        "right": TaskState.SKIPPED,
    }


def _ok() -> str:
    return "ok"


def _ok2() -> str:
    return "ok2"


def _bad() -> None:
    raise RuntimeError("bad")


def _bad2() -> None:
    raise RuntimeError("bad2")


def _join(*upstream: Any) -> str:
    return "joined"


@pytest.mark.parametrize(
    ("rule", "upstreams", "expected"),
    [
        ("all_success", (_ok, _bad), TaskState.UPSTREAM_FAILED),
        ("all_success", (_ok, _ok2), TaskState.SUCCEEDED),
        ("all_done", (_ok, _bad), TaskState.SUCCEEDED),
        ("all_done", (_bad, _bad2), TaskState.SUCCEEDED),
        ("one_success", (_ok, _bad), TaskState.SUCCEEDED),
        ("one_success", (_bad, _bad2), TaskState.UPSTREAM_FAILED),
        ("one_failed", (_ok, _bad), TaskState.SUCCEEDED),
        ("one_failed", (_ok, _ok2), TaskState.SKIPPED),
        ("none_failed", (_ok, _bad), TaskState.UPSTREAM_FAILED),
        ("none_failed", (_ok, _ok2), TaskState.SUCCEEDED),
        ("all_failed", (_ok, _bad), TaskState.SKIPPED),
        ("all_failed", (_bad, _bad2), TaskState.SUCCEEDED),
    ],
)
async def test_trigger_rules(
    tmp_path: Path, rule: str, upstreams: tuple[Callable[[], Any], ...], expected: TaskState
) -> None:
    with Flow(f"rule_{rule}") as dag:
        ups = [task(fn) for fn in upstreams]
        ups >> task(_join, trigger_rule=rule)

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(dag)
    assert result.tasks["_join"].state is expected
    if expected is TaskState.SUCCEEDED:
        assert result.result("_join") == "joined"
    any_failed = any(fn in (_bad, _bad2) for fn in upstreams)
    assert result.state is (RunState.FAILED if any_failed else RunState.SUCCEEDED)


async def test_mapping_makes_one_instance_per_item_in_order(tmp_path: Path) -> None:
    n = 6
    finished = [anyio.Event() for _ in range(n)]

    @task
    async def double(x: int, i: int) -> int:
        # Instance i finishes only after instance i + 1: completion order is reversed, so the
        # collected list being in item order says the engine orders by item, not by finish.
        if i + 1 < n:
            await finished[i + 1].wait()
        finished[i].set()
        return x * 2

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @flow
    def mapped(xs: list[int], idx: list[int]) -> None:
        total(double.map(xs, idx))

    xs = [10, 20, 30, 40, 50, 60]
    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(mapped, xs=xs, idx=list(range(n)))
    assert result.ok, result.error
    assert result.result("double") == [x * 2 for x in xs]
    assert result.result("total") == sum(x * 2 for x in xs)
    for i, x in enumerate(xs):
        assert result.tasks[f"double[{i}]"].state is TaskState.SUCCEEDED
        assert result.result(f"double[{i}]") == x * 2


async def test_mapping_over_an_upstream_result_with_unmapped_args(tmp_path: Path) -> None:
    @task
    def produce(count: int) -> list[int]:
        return list(range(count))

    @task
    async def add(x: int, offset: int) -> int:
        return x + offset

    @task
    def collect(values: list[int]) -> list[int]:
        return values

    @flow
    def fanout(count: int) -> None:
        collect(add.map(produce(count), unmapped(100)))

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(fanout, count=5)
            empty = await engine.run(fanout, count=0)
    assert result.ok, result.error
    assert result.result("add") == [100, 101, 102, 103, 104]
    assert result.result("collect") == [100, 101, 102, 103, 104]
    assert empty.ok, empty.error
    assert empty.result("collect") == []


class Opaque:
    pass


@pytest.mark.parametrize(("value", "type_name"), [({1, 2}, "set"), (Opaque(), "Opaque")])
async def test_unserialisable_result_fails_the_task_naming_it(
    tmp_path: Path, value: Any, type_name: str
) -> None:
    calls = 0

    @task(retries=2, retry_delay=0)
    def odd_result() -> Any:
        nonlocal calls
        calls += 1
        return value

    @flow
    def unstorable() -> None:
        odd_result()

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(unstorable)
    t = result.tasks["odd_result"]
    assert result.state is RunState.FAILED
    assert t.state is TaskState.FAILED
    assert t.error is not None
    assert "'odd_result'" in t.error and type_name in t.error and "JSON" in t.error
    assert calls == 1  # retrying cannot make the value storable


# -- limits --------------------------------------------------------------------------------------
async def test_mapped_fan_out_of_1000_never_exceeds_its_pool(tmp_path: Path) -> None:
    running = peak = 0
    full = anyio.Event()

    @task(pool="narrow")
    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 8:
            full.set()
        await full.wait()  # the first wave holds until the pool is full: the cap is reached
        await anyio.lowlevel.checkpoint()
        running -= 1
        return i

    @flow
    def wide(items: list[int]) -> None:
        work.map(items)

    async with started(tmp_path, pools={"narrow": 8}) as engine:
        with anyio.fail_after(60):
            result = await engine.run(wide, items=list(range(1000)))
    assert result.ok, result.error
    assert peak == 8
    assert result.result("work") == list(range(1000))


async def test_freed_slots_go_to_the_highest_priority_first(tmp_path: Path) -> None:
    order: list[str] = []
    holding = anyio.Event()
    release = anyio.Event()

    @task(pool="one")
    async def holder() -> None:
        order.append("holder")
        holding.set()
        await release.wait()

    def queued(name: str, priority: int) -> Any:
        async def fn() -> None:
            order.append(name)

        fn.__name__ = name
        return task(fn, pool="one", priority=priority)

    low, high, mid = queued("low", 1), queued("high", 5), queued("mid", 3)

    @flow
    def prioritised() -> None:
        holder()
        low()
        high()
        mid()

    async with started(tmp_path, pools={"one": 1}) as engine:
        run_id = await engine.submit(prioritised)
        with anyio.fail_after(LIMIT_S):
            await holding.wait()
            await until(lambda: _pool_waiting(engine, "one", 3))
            release.set()
            result = await engine.wait(run_id)
    assert result.ok, result.error
    assert order == ["holder", "high", "mid", "low"]


async def _pool_waiting(engine: Engine, pool: str, n: int) -> bool:
    return engine.limits.pools[pool].waiting == n


async def test_unknown_pool_is_refused_at_registration(tmp_path: Path) -> None:
    @task(pool="nowhere")
    def lost() -> None:
        raise AssertionError("must never run")

    @flow
    def misconfigured() -> None:
        lost()

    async with started(tmp_path, pools={"somewhere": 2}) as engine:
        with pytest.raises(UnknownPoolError) as info:
            engine.add(misconfigured)
        msg = str(info.value)
        assert "'misconfigured'" in msg and "'lost'" in msg and "'nowhere'" in msg, msg
        assert "somewhere" in msg  # the pools it does know
        assert "test_engine.py" in msg  # where the task was defined
        assert "misconfigured" not in engine.flows
        with pytest.raises(UnknownPoolError):
            await engine.submit(misconfigured)
        assert await engine.store.count_runs() == 0

    @task(pool="small", slots=3)
    def greedy() -> None:
        pass

    @flow
    def too_big() -> None:
        greedy()

    engine = Engine(store_for(tmp_path, "other.db"), pools={"small": 2})
    with pytest.raises(ValueError, match="asks for 3 slots of pool 'small'"):
        engine.add(too_big)


async def test_max_active_runs_one_runs_never_overlap_and_keep_order(tmp_path: Path) -> None:
    log: list[tuple[str, str]] = []
    active = peak = 0
    first_started = anyio.Event()
    release = anyio.Event()

    @task
    async def work(tag: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        log.append(("start", tag))
        if tag == "first":
            first_started.set()
            await release.wait()
        log.append(("end", tag))
        active -= 1
        return tag

    @task
    def after(value: str) -> str:
        log.append(("after", value))
        return value

    @flow(max_active_runs=1)
    def serial(tag: str) -> None:
        after(work(tag))

    async with started(tmp_path) as engine:
        first = await engine.submit(serial, tag="first")
        with anyio.fail_after(LIMIT_S):
            await first_started.wait()
            second = await engine.submit(serial, tag="second")
            third = await engine.submit(serial, tag="third")
            waiting = await until(lambda: _waiting(engine, second))
            assert waiting.state is RunState.QUEUED
            assert waiting.waiting is not None and "max_active_runs=1" in waiting.waiting
            assert "'serial'" in waiting.waiting
            release.set()
            results = [await engine.wait(r) for r in (first, second, third)]
        assert all(r.ok for r in results)
        assert peak == 1
        assert log == [
            (kind, tag)
            for tag in ("first", "second", "third")
            for kind in ("start", "end", "after")
        ]
        done = await engine.store.get_run(second, with_tasks=False)
        assert done.waiting is None


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ({"pools": {"p": 1}}, "waiting for pool 'p'"),
        ({"max_tasks": 1}, "waiting for the global task limit"),
    ],
)
async def test_a_blocked_task_records_why_it_waits(
    tmp_path: Path, options: dict[str, Any], expect: str
) -> None:
    holding = anyio.Event()
    release = anyio.Event()
    pool = "p" if "pools" in options else None

    @task(pool=pool)
    async def holder() -> None:
        holding.set()
        await release.wait()

    @task(pool=pool)
    async def blocked() -> str:
        return "got it"

    @flow
    def contended() -> None:
        holder()
        blocked()

    async with started(tmp_path, **options) as engine:
        run_id = await engine.submit(contended)
        with anyio.fail_after(LIMIT_S):
            await holding.wait()

            async def blocked_waiting() -> TaskRecord | None:
                t = await task_record(engine, run_id, "blocked")
                return t if t.waiting else None

            rec = await until(blocked_waiting)
            assert rec.state is TaskState.WAITING
            assert rec.waiting is not None and expect in rec.waiting
            release.set()
            result = await engine.wait(run_id)
    assert result.ok, result.error
    assert result.result("blocked") == "got it"


async def test_cancelling_a_mapped_run_gives_every_slot_back(tmp_path: Path) -> None:
    started = 0
    two_running = anyio.Event()

    @task(pool="p")
    async def block(i: int) -> int:
        nonlocal started
        started += 1
        if started == 2:
            two_running.set()
        await anyio.sleep_forever()
        return i

    @flow
    def many() -> None:
        block.map(list(range(50)))

    async with Engine(
        store_for(tmp_path, "e.db"), pools={"p": 2}, max_tasks=3, grace_period_s=0
    ) as engine:
        engine.add(many)
        with anyio.fail_after(LIMIT_S):
            run_id = await engine.submit(many)
            await two_running.wait()
            pool = engine.limits.pool("p")
            assert pool.in_use == 2 and started == 2  # the rest wait as records, not tasks
            assert await engine.cancel(run_id)
            result = await engine.wait(run_id)
        assert result.state is RunState.CANCELLED
        assert pool.in_use == 0
        assert engine.limits.global_pool is not None
        assert engine.limits.global_pool.in_use == 0
        states = [t.state for name, t in result.tasks.items() if name.startswith("block[")]
        assert states.count(TaskState.CANCELLED) == 2  # the two that were running
        assert states.count(TaskState.SKIPPED) == 48  # the rest never started


async def test_retry_from_a_task_reruns_it_and_downstream_and_whole_reruns_all(
    tmp_path: Path,
) -> None:
    source = tmp_path / "input.txt"
    source.write_text("bad")

    @task
    def extract() -> str:
        return source.read_text()

    @task
    def transform(text: str) -> str:
        if text == "bad":
            raise ValueError("bad input")
        return text.upper()

    @task
    def load(text: str) -> str:
        return f"loaded {text}"

    @flow
    def pipeline() -> None:
        load(transform(extract()))

    async with started(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            first = await engine.run(pipeline)
            assert first.state is RunState.FAILED
            assert first.error == "task(s) failed: transform"
            source.write_text("good")  # the input is fixed; the stored extract result is not
            again = await engine.wait(await engine.retry(first.run_id))
            assert again.state is RunState.FAILED  # from failed: transform got the old input
            assert again.tasks["extract"].attempts == 1
            cleared = await engine.wait(await engine.retry(first.run_id, from_task="extract"))
            assert cleared.ok, cleared.error
            assert cleared.result("load") == "loaded GOOD"
            assert {n: t.attempts for n, t in cleared.tasks.items()} == {
                "extract": 2,
                "transform": 3,
                "load": 1,
            }
            with pytest.raises(EvflowError, match="nothing to retry from failed tasks"):
                await engine.retry(first.run_id)
            whole = await engine.wait(await engine.retry(first.run_id, whole=True))
            assert whole.ok
            assert {n: t.attempts for n, t in whole.tasks.items()} == {
                "extract": 3,
                "transform": 4,
                "load": 2,
            }
            with pytest.raises(EvflowError, match="no task 'nope'"):
                await engine.retry(first.run_id, from_task="nope")
        attempts = await engine.store.list_attempts(first.run_id)
        assert [(a.task, a.attempt, str(a.state)) for a in attempts if a.task == "transform"] == [
            ("transform", 1, "failed"),
            ("transform", 2, "failed"),
            ("transform", 3, "succeeded"),
            ("transform", 4, "succeeded"),
        ]
