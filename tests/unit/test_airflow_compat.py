"""Airflow DAG files on evflow: DAG, operators, default_args, trigger rules, XCom, branching."""

from __future__ import annotations

import importlib.util
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from evflow import Engine, Flow, RunResult, TaskState
from evflow.compat.airflow import (
    DAG,
    XCOM_MARKER,
    AirflowCompatWarning,
    BaseOperator,
    BranchPythonOperator,
    DummyOperator,
    EmptyOperator,
    PythonOperator,
    TriggerRule,
    chain,
    cross_downstream,
    days_ago,
    get_current_context,
)
from evflow.errors import CycleError, DuplicateTaskError, FlowDefinitionError
from tests.postgres import store_for

EXAMPLE = Path(__file__).resolve().parents[2] / "flows" / "airflow_etl.py"
PARIS = "Europe/Paris"
FAST = {"retry_delay": timedelta(milliseconds=10)}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airflow_etl_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run(tmp_path: Path, dag: Flow, **params: Any) -> RunResult:
    async with Engine(store_for(tmp_path, "e.db")) as engine:
        with anyio.fail_after(20):
            return await engine.run(dag, **params)


def states(result: RunResult) -> dict[str, TaskState]:
    return {name: t.state for name, t in result.tasks.items()}


# -- the DAG is a flow ---------------------------------------------------------------------------
def test_dag_is_a_flow_named_after_dag_id() -> None:
    with DAG("d", schedule_interval="@daily", catchup=False, tags=["x"]) as dag:
        EmptyOperator(task_id="only")
    assert isinstance(dag, Flow)
    assert dag.name == dag.dag_id == "d"
    assert dag.tags == ("x",)
    assert "@daily" in dag.schedule.describe()
    assert dag.misfire == "latest"
    assert dag.task_ids == ["only"]
    assert isinstance(dag.get_task("only"), EmptyOperator)


def test_schedule_forms() -> None:
    cron = DAG("c", schedule="30 2 * * 1", catchup=True)
    assert cron.schedule.describe() == "cron '30 2 * * 1' in UTC"
    assert cron.misfire == "catchup"
    start = datetime(2024, 1, 1, 6)  # naive: UTC, as in Airflow
    every = DAG("i", schedule=timedelta(hours=6), start_date=start)
    assert every.schedule.start == start.replace(tzinfo=UTC)
    assert every.schedule.every == timedelta(hours=6)
    assert DAG("n").schedule is None
    with pytest.raises(FlowDefinitionError, match=r"'b'.*not both"):
        DAG("b", schedule="@daily", schedule_interval="@hourly")
    with pytest.raises(FlowDefinitionError, match="DAG 'x': bad schedule"):
        DAG("x", schedule="not a cron")


def test_cron_runs_in_the_start_date_time_zone() -> None:
    paris = DAG("tz", schedule="0 2 * * *", start_date=datetime(2024, 1, 1, tzinfo=ZoneInfo(PARIS)))
    assert paris.schedule.describe() == f"cron '0 2 * * *' in {PARIS}"
    fixed = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    with pytest.raises(FlowDefinitionError, match="fixed-offset time zone"):
        DAG("fixed", schedule="@daily", start_date=fixed)
    assert (
        DAG("fixed_interval", schedule=timedelta(days=1), start_date=fixed).schedule.start == fixed
    )


def test_days_ago_is_midnight_utc() -> None:
    d = days_ago(2)
    assert d.tzinfo is UTC and (d.hour, d.minute, d.second) == (0, 0, 0)
    assert datetime.now(UTC) - d < timedelta(days=3)


# -- the example DAG file ------------------------------------------------------------------------
async def test_example_dag_runs_end_to_end(tmp_path: Path) -> None:
    module = load_example()
    dag = module.dag
    assert isinstance(dag, DAG) and dag.name == "airflow_etl"
    assert "@daily" in dag.schedule.describe()
    assert dag.owner == "data-engineering"
    load = dag.get_task("load")
    assert load.options.retries == 1 and load.options.retry_delay_s == 300
    result = await run(tmp_path, dag)
    assert result.ok, result.error
    assert result.result("transform") == {"total_order_value": 1236.7, "orders": 3}
    assert result.result("load") == 1236.7


# -- default_args and operator arguments ----------------------------------------------------------
async def test_default_args_retries_are_honoured(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    dag = DAG("retry", default_args={"retries": 1, **FAST})
    PythonOperator(task_id="flaky", python_callable=flaky, dag=dag)
    result = await run(tmp_path, dag)
    assert result.ok
    assert result.tasks["flaky"].attempts == 2
    assert result.result("flaky") == "ok"


def test_operator_arguments_override_default_args() -> None:
    default_args = {
        "owner": "team",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=2),
        "pool": "db",
        "priority_weight": 5,
    }
    with DAG("opts", default_args=default_args) as dag:
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b", retries=0, pool="default_pool", owner="me")
    assert (a.options.retries, a.options.retry_delay_s, a.options.retry_backoff) == (3, 30, 2)
    assert (a.options.timeout_s, a.options.pool, a.options.priority) == (120, "db", 5)
    assert a.owner == "team" and dag.owner == "team"
    assert (b.options.retries, b.options.pool, b.owner) == (0, None, "me")
    assert b.options.retry_backoff == 2.0  # still from default_args
    plain = EmptyOperator(task_id="plain", dag=DAG("plain"))
    assert (plain.options.retry_backoff, plain.options.retry_delay_s) == (1.0, 300)


async def test_execution_timeout_fails_the_task(tmp_path: Path) -> None:
    ev = threading.Event()

    def slow() -> None:
        ev.wait(5)

    dag = DAG("timeout")
    PythonOperator(
        task_id="slow", python_callable=slow, execution_timeout=timedelta(milliseconds=50), dag=dag
    )
    try:
        result = await run(tmp_path, dag)
    finally:
        ev.set()
    assert states(result) == {"slow": TaskState.FAILED}
    assert "timed out" in (result.tasks["slow"].error or "")


# -- trigger rules and branching -----------------------------------------------------------------
async def test_trigger_rule_strings(tmp_path: Path) -> None:
    def boom() -> None:
        raise ValueError("boom")

    with DAG("rules") as dag:
        fail = PythonOperator(task_id="fail", python_callable=boom)
        ok = EmptyOperator(task_id="ok")
        on_fail = EmptyOperator(task_id="on_fail", trigger_rule="one_failed")
        strict = EmptyOperator(task_id="strict")
        done = EmptyOperator(task_id="done", trigger_rule=TriggerRule.ALL_DONE)
        always = EmptyOperator(task_id="always", trigger_rule="always")
        one_ok = EmptyOperator(task_id="one_ok", trigger_rule="one_success")
        [fail, ok] >> on_fail
        [fail, ok] >> strict
        [fail, ok] >> done
        [fail, ok] >> one_ok
        fail >> always
    assert always.options.trigger_rule == "always"
    assert strict.options.trigger_rule == "all_success_strict"  # Airflow's all_success
    result = await run(tmp_path, dag)
    assert states(result) == {
        "fail": TaskState.FAILED,
        "ok": TaskState.SUCCEEDED,
        "on_fail": TaskState.SUCCEEDED,
        "strict": TaskState.UPSTREAM_FAILED,
        "done": TaskState.SUCCEEDED,
        "always": TaskState.SUCCEEDED,
        "one_ok": TaskState.SUCCEEDED,
    }


def test_unknown_and_unsupported_trigger_rules_name_the_task() -> None:
    with pytest.raises(FlowDefinitionError, match="DAG 'r', task 'x': unknown trigger_rule") as e:
        EmptyOperator(task_id="x", trigger_rule="all_sucess", dag=DAG("r"))
    assert (e.value.flow, e.value.task) == ("r", "x")
    assert "test_airflow_compat.py" in (e.value.location or "")
    with pytest.raises(
        FlowDefinitionError, match="'all_done_setup_success' has no evflow equivalent"
    ):
        EmptyOperator(task_id="y", trigger_rule=TriggerRule.ALL_DONE_SETUP_SUCCESS, dag=DAG("r2"))


async def test_branch_skips_the_path_not_taken(tmp_path: Path) -> None:
    def choose(params: dict[str, Any]) -> str:
        return "big" if params["n"] > 10 else "small"

    with DAG("branch", params={"n": 1}) as dag:
        pick = BranchPythonOperator(task_id="pick", python_callable=choose)
        big = PythonOperator(task_id="big", python_callable=lambda: "big")
        small = PythonOperator(task_id="small", python_callable=lambda: "small")
        after_big = EmptyOperator(task_id="after_big")
        join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
        pick >> [big, small]
        big >> after_big
        [after_big, small] >> join
    result = await run(tmp_path, dag, n=50)
    assert result.ok
    assert result.result("pick") == "big"
    assert states(result)["small"] is TaskState.SKIPPED
    assert states(result)["after_big"] is TaskState.SUCCEEDED
    assert states(result)["join"] is TaskState.SUCCEEDED

    result = await run(tmp_path, dag)  # n=1 from the DAG's params
    assert states(result)["big"] is TaskState.SKIPPED
    assert states(result)["after_big"] is TaskState.SKIPPED
    assert states(result)["small"] is TaskState.SUCCEEDED
    assert states(result)["join"] is TaskState.SUCCEEDED


async def test_branch_returning_a_list_or_none(tmp_path: Path) -> None:
    with DAG("branches") as dag:
        pick = BranchPythonOperator(task_id="pick", python_callable=lambda: ("a", "b"))
        none = BranchPythonOperator(task_id="none", python_callable=lambda: None)
        pick >> [EmptyOperator(task_id="a"), EmptyOperator(task_id="b"), EmptyOperator(task_id="c")]
        none >> EmptyOperator(task_id="d")
    s = states(await run(tmp_path, dag))
    assert (s["a"], s["b"], s["c"], s["d"]) == (
        TaskState.SUCCEEDED,
        TaskState.SUCCEEDED,
        TaskState.SKIPPED,
        TaskState.SKIPPED,
    )


async def test_empty_and_dummy_operators(tmp_path: Path) -> None:
    with DAG("empty") as dag:
        start = DummyOperator(task_id="start")
        end = EmptyOperator(task_id="end")
        quiet = PythonOperator(task_id="quiet", python_callable=lambda: 5, do_xcom_push=False)
        start >> end >> quiet
    assert isinstance(start, EmptyOperator) and isinstance(end, BaseOperator)
    assert end.upstream_task_ids == {"start"} and start.downstream_task_ids == {"end"}
    result = await run(tmp_path, dag)
    assert result.ok and result.result("end") is None
    assert result.result("quiet") is None  # do_xcom_push=False stores no result


# -- context and XCom ----------------------------------------------------------------------------
async def test_xcom_pull_reads_upstream_results(tmp_path: Path) -> None:
    def pull_many(ti: Any) -> list[Any]:
        return [ti.xcom_pull(task_ids=["a", "b"]), ti.xcom_pull(task_ids="not_a_task")]

    def push(**context: Any) -> int:
        context["ti"].xcom_push(key="rows", value=[1, 2])
        return 7

    def pull_key(ti: Any) -> list[Any]:
        return [
            ti.xcom_pull(task_ids="push", key="rows"),
            ti.xcom_pull(task_ids="push"),
            ti.xcom_pull(task_ids="push", key="missing"),
        ]

    def far(ti: Any) -> Any:
        return ti.xcom_pull(task_ids="a")  # two tasks up

    def beside(ti: Any) -> Any:
        return ti.xcom_pull(task_ids="b")  # not upstream

    with DAG("xcom") as dag:
        a = PythonOperator(task_id="a", python_callable=lambda: {"x": 1})
        b = PythonOperator(task_id="b", python_callable=lambda: [2])
        many = PythonOperator(task_id="many", python_callable=pull_many)
        p = PythonOperator(task_id="push", python_callable=push)
        k = PythonOperator(task_id="key", python_callable=pull_key)
        f = PythonOperator(task_id="far", python_callable=far)
        s = PythonOperator(task_id="beside", python_callable=beside)
        [a, b] >> many
        a >> p >> k
        k >> f
        a >> s
    result = await run(tmp_path, dag)
    assert result.result("many") == [[{"x": 1}, [2]], None]
    assert result.result("push") == {XCOM_MARKER: {"rows": [1, 2], "return_value": 7}}
    assert result.result("key") == [[1, 2], 7, None]
    assert result.result("far") == {"x": 1}
    beside_task = result.tasks["beside"]
    assert beside_task.state is TaskState.FAILED
    assert "'b', which is not upstream" in (beside_task.error or "")
    assert "add b >> beside" in (beside_task.error or "")


async def test_context_and_op_args(tmp_path: Path) -> None:
    def named(
        a: int, b: int, *, ds: str, ti: Any, params: dict[str, Any], scale: int
    ) -> dict[str, Any]:
        return {"sum": (a + b) * scale, "ds": ds, "task": ti.task_id, "limit": params["limit"]}

    def everything(**kwargs: Any) -> dict[str, Any]:
        ctx = get_current_context()
        assert ctx["run_id"] == kwargs["run_id"]
        run = kwargs["dag_run"]
        return {
            "ts": kwargs["ts"],
            "ds_nodash": kwargs["ds_nodash"],
            "conf": run.conf,
            "try": kwargs["ti"].try_number,
            "dag": kwargs["dag"].dag_id,
            "task": kwargs["task"].task_id,
            "extra": kwargs["extra"],
        }

    with DAG("ctx", params={"limit": 5}) as dag:
        PythonOperator(
            task_id="named", python_callable=named, op_args=[1, 2], op_kwargs={"scale": 10}
        )
        PythonOperator(task_id="all", python_callable=everything, op_kwargs={"extra": True})
    result = await run(tmp_path, dag, logical_date="2024-03-05T06:00:00+00:00", other="x")
    assert result.ok, result.error
    assert result.result("named") == {"sum": 30, "ds": "2024-03-05", "task": "named", "limit": 5}
    everything_result = result.result("all")
    assert everything_result["ts"] == "2024-03-05T06:00:00+00:00"
    assert everything_result["ds_nodash"] == "20240305"
    assert everything_result["conf"]["other"] == "x"
    assert everything_result["try"] == 1
    assert (everything_result["dag"], everything_result["task"]) == ("ctx", "all")
    assert everything_result["extra"] is True


def test_dag_test_runs_once_on_a_throwaway_engine() -> None:
    with DAG("selftest") as dag:
        PythonOperator(task_id="when", python_callable=lambda ds: ds)
    result = dag.test(execution_date=datetime(2023, 7, 1))
    assert result.ok and result.result("when") == "2023-07-01"


# -- relationships and validation ----------------------------------------------------------------
def test_chain_cross_downstream_and_set_upstream() -> None:
    with DAG("links") as dag:
        a, b, c, d, e, f, g = (EmptyOperator(task_id=n) for n in "abcdefg")
        chain(a, [b, c], [d, e], f)
        g.set_upstream(f)
    x = EmptyOperator(task_id="x", dag=dag)
    y = EmptyOperator(task_id="y", dag=dag)
    cross_downstream([x, y], [a])
    f << x
    up = {n.name: sorted(u.name for u in n.upstream) for n in dag.tasks}
    assert up == {
        "a": ["x", "y"],
        "b": ["a"],
        "c": ["a"],
        "d": ["b"],
        "e": ["c"],
        "f": ["d", "e", "x"],
        "g": ["f"],
        "x": [],
        "y": [],
    }
    with pytest.raises(FlowDefinitionError, match="same length"):
        chain([a, b], [c])


def test_cycle_names_the_dag_and_task() -> None:
    dag = DAG("loop")
    a = EmptyOperator(task_id="a", dag=dag)
    b = EmptyOperator(task_id="b", dag=dag)
    c = EmptyOperator(task_id="c", dag=dag)
    a >> b >> c
    with pytest.raises(CycleError, match=r"flow 'loop'.*a -> b -> c -> a") as e:
        c >> a
    assert (e.value.flow, e.value.task) == ("loop", "a")
    dag.validate()  # the failed edge was not added


def test_definition_errors() -> None:
    with pytest.raises(FlowDefinitionError, match="'orphan' has no DAG"):
        EmptyOperator(task_id="orphan")
    with pytest.raises(DuplicateTaskError, match="duplicate task name 't'"), DAG("dup"):
        EmptyOperator(task_id="t")
        EmptyOperator(task_id="t")
    with pytest.raises(FlowDefinitionError, match="has no tasks"), DAG("empty_dag"):
        pass
    with pytest.raises(FlowDefinitionError, match=r"unknown argument.*retires"):
        EmptyOperator(task_id="typo", retires=3, dag=DAG("typo"))
    with pytest.raises(FlowDefinitionError, match=r"unknown argument.*bogus"):
        DAG("bad_dag", bogus=True)
    with pytest.raises(FlowDefinitionError, match="python_callable must be callable"):
        PythonOperator(task_id="nc", python_callable="nope", dag=DAG("nc"))  # type: ignore[arg-type]
    other = EmptyOperator(task_id="o", dag=DAG("other"))
    with pytest.raises(FlowDefinitionError, match="belongs to flow 'other'"):
        EmptyOperator(task_id="m", dag=DAG("mine")) >> other


def test_ignored_airflow_arguments_warn_or_pass_quietly() -> None:
    with pytest.warns(AirflowCompatWarning, match="depends_on_past"):
        DAG("w", default_args={"depends_on_past": True, "email": ["a@b.c"]})
    with pytest.warns(AirflowCompatWarning, match="on_execute_callback") as rec:
        EmptyOperator(task_id="cb", on_execute_callback=print, dag=DAG("w2"))
    assert rec[0].filename == __file__
    # Settings that change nothing, or are off, pass without a warning.
    quiet = DAG(
        "q",
        default_args={"depends_on_past": False, "email_on_failure": False},
        doc_md="Docs.",
        default_view="graph",
    )
    EmptyOperator(task_id="t", doc_md="x", queue="q", dag=quiet)
    assert quiet.description == "Docs."


def test_version_follows_the_callable_code() -> None:
    def first() -> int:
        return 1

    def second() -> int:
        return 2

    def build(fn: Any) -> str:
        dag = DAG("v")
        PythonOperator(task_id="t", python_callable=fn, dag=dag)
        return dag.version

    assert build(first) == build(first)
    assert build(first) != build(second)


async def test_all_success_skips_after_a_skipped_upstream_as_in_airflow(tmp_path: Path) -> None:
    """Airflow's all_success skips a task when an upstream was skipped; evflow's own leaves
    skipped upstreams out. The compat layer keeps Airflow's meaning."""

    def choose() -> str:
        return "left"

    with DAG("strict_join") as dag:
        pick = BranchPythonOperator(task_id="pick", python_callable=choose)
        left = EmptyOperator(task_id="left")
        right = EmptyOperator(task_id="right")
        join = EmptyOperator(task_id="join")  # all_success by default
        lenient = EmptyOperator(task_id="lenient", trigger_rule="none_failed_min_one_success")
        pick >> [left, right]
        [left, right] >> join
        [left, right] >> lenient
    result = await run(tmp_path, dag)
    assert states(result) == {
        "pick": TaskState.SUCCEEDED,
        "left": TaskState.SUCCEEDED,
        "right": TaskState.SKIPPED,
        "join": TaskState.SKIPPED,
        "lenient": TaskState.SUCCEEDED,
    }
