"""Airflow DAG features beyond the simplest: TaskFlow, context, templates, operators, groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from evflow import Engine, RunResult, RunState, TaskState
from evflow.clock import ManualClock
from evflow.compat.airflow import (
    DAG,
    BashOperator,
    EmptyOperator,
    PythonOperator,
    ShortCircuitOperator,
    TaskGroup,
    Variable,
    chain,
    dag,
    task,
    task_group,
)
from evflow.errors import FlowDefinitionError
from evflow.flows import Flow
from tests.integration.test_schedules import schedule_idle
from tests.observers import LIMIT_S, RunLog, until


async def run(tmp_path: Path, d: Flow, **params: Any) -> RunResult:
    async with Engine(tmp_path / "e.db") as engine:
        with anyio.fail_after(20):
            return await engine.run(d, **params)


def states(result: RunResult) -> dict[str, TaskState]:
    return {n: t.state for n, t in result.tasks.items() if "[" not in n}


# -- TaskFlow ----------------------------------------------------------------------------------
async def test_taskflow_results_branch_and_mapping(tmp_path: Path) -> None:
    @dag(schedule=None, params={"factor": 10})
    def flowy(offset: int = 1) -> None:
        @task
        def numbers() -> list[int]:
            return [1, 2, 3]

        @task
        def scale(x: int, factor: int, offset: int) -> int:
            return x * factor + offset

        @task
        def total(values: list[int]) -> int:
            return sum(values)

        @task.branch
        def pick(n: int) -> str:
            return "big" if n > 50 else "small"

        @task(task_id="stats")
        def stats() -> dict[str, int]:  # a dict annotation: multiple outputs
            return {"lo": 1, "hi": 9}

        @task
        def spread(lo: int, hi: int) -> int:
            return hi - lo

        scaled = scale.partial(factor=10, offset=offset).expand(x=numbers())
        summed = total(scaled)
        pick(summed) >> [EmptyOperator(task_id="big"), EmptyOperator(task_id="small")]
        s = stats()
        spread(s["lo"], s["hi"])
        total.override(task_id="literal_total")(scale.partial(factor=2, offset=0).expand(x=[4, 5]))

    d = flowy()
    assert isinstance(d, DAG)
    result = await run(tmp_path, d)
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.result("scale") == [11, 21, 31]
    assert result.result("total") == 63
    assert result.result("pick") == "big"
    assert states(result)["small"] is TaskState.SKIPPED
    assert result.result("spread") == 8
    assert result.result("literal_total") == 18
    # a @dag parameter is a run parameter: a run may override it
    again = await run(tmp_path / "again", flowy(), offset=0)
    assert again.result("scale") == [10, 20, 30]


def test_taskflow_misuse_fails_at_load() -> None:
    @task
    def nums() -> list[int]:
        return [1]

    with pytest.raises(FlowDefinitionError, match="called outside a DAG"):
        nums()
    with DAG("iter_dag"), pytest.raises(FlowDefinitionError, match="exists only at run time"):
        for _ in nums():
            pass
    with pytest.raises(AttributeError, match=r"@task\.docker is not supported"):
        task.docker  # noqa: B018


# -- context, op_args / op_kwargs, XCom --------------------------------------------------------
async def test_context_op_args_and_xcom(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def push(ti: Any) -> str:
        ti.xcom_push(key="rows", value=42)
        return "pushed"

    def look(a: int, b: int, *, c: int, ds: str, ti: Any, **context: Any) -> int:
        seen.update(context, ds=ds, a=a, b=b, c=c)
        seen["pulled"] = ti.xcom_pull(task_ids="push", key="rows")
        seen["returned"] = ti.xcom_pull(task_ids="push")
        return a + b + c

    with DAG("ctx", schedule="@daily", params={"region": "eu"}) as d:
        p = PythonOperator(task_id="push", python_callable=push)
        q = PythonOperator(task_id="look", python_callable=look, op_args=[1, 2], op_kwargs={"c": 3})
        p >> q
    result = await run(tmp_path, d, logical_date="2026-11-28T00:00:00+00:00", extra="x")
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.result("look") == 6
    assert seen["ds"] == "2026-11-28"
    assert seen["ds_nodash"] == "20261128"
    assert seen["logical_date"] == datetime(2026, 11, 28, tzinfo=UTC)
    assert seen["data_interval_start"] == datetime(2026, 11, 28, tzinfo=UTC)
    assert seen["data_interval_end"] == datetime(2026, 11, 29, tzinfo=UTC)
    assert seen["params"] == {"region": "eu", "extra": "x"}
    assert seen["run_id"] == result.run_id
    assert seen["dag_run"].conf["extra"] == "x"
    assert seen["dag_run"].run_id == result.run_id
    assert seen["pulled"] == 42
    assert seen["returned"] == "pushed"


# -- templates ---------------------------------------------------------------------------------
async def test_templates_render_the_authors_text_never_event_data(tmp_path: Path) -> None:
    with DAG("tpl", params={"table": "orders"}) as d:
        PythonOperator(
            task_id="show",
            python_callable=lambda *args, **kwargs: [*args, kwargs["when"]],
            op_args=["{{ params.table }}", "{{ ds_nodash }}", "{{ params.who }}"],
            op_kwargs={"when": "{{ macros.ds_add(ds, -1) }}"},
        )
    result = await run(tmp_path, d, logical_date="2026-11-28", who="{{ 7 * 7 }}{% raise %}")
    assert result.state is RunState.SUCCEEDED, result.error
    # the run parameter's text is inserted as data: not evaluated
    assert result.result("show") == ["orders", "20261128", "{{ 7 * 7 }}{% raise %}", "2026-11-27"]


def test_bad_templates_fail_at_load_naming_task_and_field() -> None:
    unknown = r"task 'x', field bash_command.*unknown_thing"
    with pytest.raises(FlowDefinitionError, match=unknown), DAG("t1"):
        BashOperator(task_id="x", bash_command="echo {{ unknown_thing }}")
    bad = r"task 'y', field op_kwargs: bad template"
    with pytest.raises(FlowDefinitionError, match=bad), DAG("t2"):
        PythonOperator(task_id="y", python_callable=print, op_kwargs={"a": "{{ ds "})


# -- operators ---------------------------------------------------------------------------------
async def test_bash_output_goes_to_the_task_log_and_exit_codes_fail(tmp_path: Path) -> None:
    with DAG("bash", params={"name": "world"}) as d:
        ok = BashOperator(
            task_id="ok",
            bash_command="echo hello {{ params.name }}; echo to-stderr >&2; echo $GREETING",
            env={"GREETING": "{{ ds }}"},
        )
        bad = BashOperator(task_id="bad", bash_command="echo before; exit 3")
        ok >> bad
    async with Engine(tmp_path / "e.db") as engine:
        with anyio.fail_after(20):
            result = await engine.run(d, logical_date="2026-11-28")
        ok_lines = [r.message for r in await engine.store.list_logs(result.run_id, "ok")]
        bad_lines = [r.message for r in await engine.store.list_logs(result.run_id, "bad")]
    assert ok_lines == ["hello world", "to-stderr", "2026-11-28"]
    assert result.result("ok") == "2026-11-28"
    assert states(result) == {"ok": TaskState.SUCCEEDED, "bad": TaskState.FAILED}
    assert "before" in bad_lines
    assert "exited with code 3" in (result.tasks["bad"].error or "")


def test_bash_unsupported_arguments_fail_at_load() -> None:
    with pytest.raises(FlowDefinitionError, match="skip_on_exit_code is not supported"), DAG("b1"):
        BashOperator(task_id="s", bash_command="true", skip_on_exit_code=99)
    with pytest.raises(FlowDefinitionError, match="script template file"), DAG("b2"):
        BashOperator(task_id="f", bash_command="run.sh")


async def test_short_circuit(tmp_path: Path) -> None:
    def build(name: str, go: bool) -> DAG:
        with DAG(name) as d:
            gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: go)
            gate >> EmptyOperator(task_id="after") >> EmptyOperator(task_id="last")
        return d

    closed = await run(tmp_path / "a", build("closed", False))
    assert states(closed) == {
        "gate": TaskState.SUCCEEDED,
        "after": TaskState.SKIPPED,
        "last": TaskState.SKIPPED,
    }
    opened = await run(tmp_path / "b", build("opened", True))
    assert set(states(opened).values()) == {TaskState.SUCCEEDED}


async def test_task_groups_and_chain(tmp_path: Path) -> None:
    with DAG("groups", default_args={"retries": 0}) as d:
        start = EmptyOperator(task_id="start")
        with TaskGroup("extract", default_args={"retries": 2}) as extract:
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            a >> b
            with TaskGroup("inner"):
                EmptyOperator(task_id="c")

        @task_group
        def load() -> Any:
            @task
            def one() -> int:
                return 1

            return one()

        end = EmptyOperator(task_id="end")
        chain(start, extract, load(), end)
    assert d.task_ids == ["start", "extract.a", "extract.b", "extract.inner.c", "end", "load.one"]
    up = {n: sorted(u.name for u in d.nodes[n].upstream) for n in d.task_ids}
    assert up == {
        "start": [],
        "extract.a": ["start"],
        "extract.b": ["extract.a"],
        "extract.inner.c": ["start"],
        "load.one": ["extract.b", "extract.inner.c"],
        "end": ["load.one"],
    }
    assert d.nodes["extract.a"].options.retries == 2
    assert d.nodes["start"].options.retries == 0
    result = await run(tmp_path, d)
    assert result.state is RunState.SUCCEEDED


def test_catchup_and_max_active_runs_map_to_the_flow() -> None:
    assert DAG("c1", schedule="@daily", catchup=True, max_active_runs=2).misfire == "catchup"
    d = DAG("c2", schedule="@daily", max_active_runs=1)
    assert (d.misfire, d.max_active_runs) == ("latest", 1)


# -- variables ---------------------------------------------------------------------------------
async def test_variable_get_from_the_environment_and_evflow_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evflow.service.config import load_config
    from evflow.service.loader import load_flows

    (tmp_path / "evflow.toml").write_text(
        '[variables]\nbucket = "s3://data"\nlimits = \'{"n": 3}\'\n'
    )
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "vars_dag.py").write_text(
        "from evflow.compat.airflow import DAG, BashOperator, PythonOperator, Variable\n"
        "with DAG('vars', params={'bucket': Variable.get('bucket')}) as dag:\n"
        "    PythonOperator(task_id='read', python_callable=lambda: [\n"
        "        Variable.get('limits', deserialize_json=True),\n"
        "        Variable.get('region'),\n"
        "        Variable.get('missing', default_var='d'),\n"
        "    ])\n"
        "    BashOperator(task_id='tpl', bash_command='echo {{ var.value.bucket }}')\n"
    )
    monkeypatch.setenv("AIRFLOW_VAR_REGION", "eu-west-1")
    monkeypatch.setenv("AIRFLOW_VAR_CONF", '{"a": [1, 2]}')
    assert load_config(tmp_path).source  # `evflow serve` accepts the [variables] table
    d = load_flows(tmp_path / "flows", base=tmp_path)["vars"]
    assert isinstance(d, DAG)
    assert d.params == {"bucket": "s3://data"}  # read at load, from the project's evflow.toml
    result = await run(tmp_path, d)
    assert result.result("read") == [{"n": 3}, "eu-west-1", "d"]
    assert result.result("tpl") == "s3://data"
    assert Variable.get("conf", deserialize_json=True) == {"a": [1, 2]}
    with pytest.raises(KeyError, match="AIRFLOW_VAR_MISSING"):
        Variable.get("missing")


# -- logical dates -----------------------------------------------------------------------------
def dates_dag(name: str, *, catchup: bool = False) -> DAG:
    def dates(ds: str, data_interval_start: datetime, data_interval_end: datetime) -> list[str]:
        return [ds, data_interval_start.isoformat(), data_interval_end.isoformat()]

    with DAG(name, schedule="@daily", start_date=datetime(2026, 1, 1), catchup=catchup) as d:
        PythonOperator(task_id="dates", python_callable=dates)
    return d


async def test_a_scheduled_run_covers_the_interval_its_slot_closes(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 11, 28, 23, 0, tzinfo=UTC))
    runs = RunLog()
    d = dates_dag("sched")
    engine = Engine(tmp_path / "e.db", clock=clock, grace_period_s=0)
    runs.attach(engine)
    engine.add(d)
    async with engine:
        with anyio.fail_after(LIMIT_S):
            await engine.sensors_settled()
        await schedule_idle(clock)
        clock.set(datetime(2026, 11, 29, 0, 0, 5, tzinfo=UTC))
        (record,) = await runs.wait_for(1)
        result = await engine.wait(record.id)
    assert result.result("dates") == [
        "2026-11-28",
        "2026-11-28T00:00:00+00:00",
        "2026-11-29T00:00:00+00:00",
    ]


@pytest.mark.parametrize(("catchup", "days"), [(True, ["26", "27", "28"]), (False, ["28"])])
async def test_catchup_runs_each_missed_slot_with_its_own_ds(
    tmp_path: Path, catchup: bool, days: list[str]
) -> None:
    clock = ManualClock(datetime(2026, 11, 25, 23, 0, tzinfo=UTC))
    runs = RunLog()
    d = dates_dag(f"catchup_{catchup}", catchup=catchup)
    engine = Engine(tmp_path / "e.db", clock=clock, grace_period_s=0)
    runs.attach(engine)
    engine.add(d)
    async with engine:
        with anyio.fail_after(LIMIT_S):
            await engine.sensors_settled()
        await schedule_idle(clock)
        clock.set(datetime(2026, 11, 26, 0, 0, 5, tzinfo=UTC))  # the first slot fires
        await runs.wait_for(1)
        await schedule_idle(clock)
        clock.set(datetime(2026, 11, 29, 0, 0, 5, tzinfo=UTC))  # three days pass unseen
        finished = await runs.wait_for(1 + len(days))
        ds = sorted([(await engine.wait(r.id)).result("dates")[0] for r in finished])
    assert ds == ["2026-11-25", *(f"2026-11-{day}" for day in days)]


async def test_a_backfill_runs_each_slot_with_its_own_ds(tmp_path: Path) -> None:
    d = dates_dag("back")
    async with Engine(tmp_path / "e.db") as engine:
        engine.add(d, schedule=False)
        ids = await engine.backfill(
            d, datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
        )
        with anyio.fail_after(20):
            results = [await engine.wait(i) for i in ids]
    got = sorted(tuple(r.result("dates")) for r in results)
    assert got == [
        ("2026-11-27", "2026-11-27T00:00:00+00:00", "2026-11-28T00:00:00+00:00"),
        ("2026-11-28", "2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00"),
    ]


def test_unsupported_airflow_names_fail_at_import() -> None:
    with pytest.raises(ImportError, match="does not provide KubernetesPodOperator"):
        from evflow.compat.airflow import KubernetesPodOperator  # noqa: F401


def test_a_bare_dag_call_is_found_by_the_loader(tmp_path: Path) -> None:
    from evflow.service.loader import load_flows

    (tmp_path / "bare.py").write_text(
        "from evflow.compat.airflow import DAG, EmptyOperator\n"
        "with DAG('bare_dag'):\n"
        "    EmptyOperator(task_id='t')\n"
    )
    assert list(load_flows(tmp_path / "bare.py", base=tmp_path)) == ["bare_dag"]


def test_short_circuit_refuses_a_rule_it_cannot_override() -> None:
    refused = r"task 'late'.*all_done.*short-circuit task"
    with pytest.raises(FlowDefinitionError, match=refused), DAG("sc_bad"):
        gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: False)
        (
            gate
            >> EmptyOperator(task_id="next")
            >> EmptyOperator(task_id="late", trigger_rule="all_done")
        )
    with DAG("sc_ok"):
        gate = ShortCircuitOperator(
            task_id="gate", python_callable=lambda: False, ignore_downstream_trigger_rules=False
        )
        (
            gate
            >> EmptyOperator(task_id="next")
            >> EmptyOperator(task_id="late", trigger_rule="all_done")
        )


async def test_mapped_classic_operator_and_templates_dict(tmp_path: Path) -> None:
    def report(templates_dict: dict[str, str], ti: Any) -> list[Any]:
        ti.log.info("reporting %s", templates_dict["day"])
        return [
            templates_dict["day"],
            ti.xcom_pull(task_ids="echo"),
            ti.xcom_pull(task_ids="echo", map_indexes=1),
        ]

    with DAG("mapped_bash") as d:
        echo = BashOperator.partial(task_id="echo").expand(
            bash_command=["echo one", "echo two", "echo {{ ds }}"]
        )
        rep = PythonOperator(
            task_id="report", python_callable=report, templates_dict={"day": "{{ ds_nodash }}"}
        )
        echo >> rep
    async with Engine(tmp_path / "e.db") as engine:
        with anyio.fail_after(20):
            result = await engine.run(d, logical_date="2026-11-28")
        lines = [r.message for r in await engine.store.list_logs(result.run_id, "report")]
    assert result.state is RunState.SUCCEEDED, result.error
    # mapped values are data, never templates
    assert result.result("report") == ["20261128", ["one", "two", "{{ ds }}"], "two"]
    assert lines == ["reporting 20261128"]


async def test_taskflow_gets_the_context(tmp_path: Path) -> None:
    from evflow.compat.airflow import Param, get_current_context

    @dag(params={"limit": Param(5, type="integer")})
    def ctx_flow() -> None:
        @task
        def show(params: dict[str, Any] | None = None, ds: str | None = None) -> list[Any]:
            assert params is not None
            return [params["limit"], ds, get_current_context()["ti"].task_id]

        show()

    result = await run(tmp_path, ctx_flow(), logical_date="2026-11-28", limit=7)
    assert result.result("show") == [7, "2026-11-28", "show"]
    with pytest.raises(FlowDefinitionError, match="not of type integer"):
        Param("five", type="integer")


async def test_bash_execution_timeout_stops_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with DAG("slow_bash") as d:
        BashOperator(
            task_id="slow",
            bash_command=f"echo $$ > {pid_file}; exec sleep 60",
            execution_timeout=timedelta(milliseconds=500),
        )
    result = await run(tmp_path, d)
    assert result.tasks["slow"].state is TaskState.FAILED
    pid = int(pid_file.read_text())

    async def stopped() -> bool:  # gone, or a zombie waiting to be reaped
        try:
            status = await anyio.Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        return "zombie" in status.lower()

    await until(stopped)


async def test_classic_multiple_outputs(tmp_path: Path) -> None:
    with DAG("multi") as d:
        stats = PythonOperator(
            task_id="stats", python_callable=lambda: {"lo": 1, "hi": 5}, multiple_outputs=True
        )
        PythonOperator(
            task_id="use",
            python_callable=lambda lo, hi: hi - lo,
            op_args=[stats.output["lo"], stats.output["hi"]],
        )
    result = await run(tmp_path, d)
    assert result.result("use") == 4


def test_arguments_that_would_change_results_fail_at_load() -> None:
    with pytest.raises(FlowDefinitionError, match="render_template_as_native_obj is not supported"):
        DAG("native", render_template_as_native_obj=True)
    with pytest.raises(FlowDefinitionError, match=r"uses prev_ds"), DAG("old_macro"):
        BashOperator(task_id="b", bash_command="echo {{ prev_ds }}")


async def test_a_task_called_in_a_loop_gets_numbered_ids(tmp_path: Path) -> None:
    @dag
    def looped() -> None:
        @task
        def square(x: int) -> int:
            return x * x

        @task
        def add(values: list[int]) -> int:
            return sum(values)

        add([square(i) for i in range(3)])

    d = looped()
    assert d.task_ids == ["square", "square__1", "square__2", "add"]
    result = await run(tmp_path, d)
    assert result.result("add") == 5


async def test_failure_success_and_retry_callbacks_get_the_context(tmp_path: Path) -> None:
    calls: list[tuple[str, Any, Any, Any]] = []

    def on_task(kind: str) -> Any:
        return lambda context: calls.append(
            (kind, context["ti"].task_id, context["ds"], context["exception"])
        )

    def boom() -> None:
        raise ValueError("bad input")

    with DAG(
        "callbacks",
        default_args={"on_retry_callback": on_task("retry"), "retry_delay": 0},
        on_failure_callback=lambda context: calls.append(
            ("dag_failed", context["dag_run"].run_id, context["ds"], context["reason"])
        ),
    ) as d:
        ok = EmptyOperator(task_id="ok", on_success_callback=[on_task("ok"), on_task("ok2")])
        bad = PythonOperator(
            task_id="bad", python_callable=boom, retries=1, on_failure_callback=on_task("fail")
        )
        ok >> bad
    result = await run(tmp_path, d, logical_date="2026-11-28")
    assert result.state is RunState.FAILED
    kinds = {c[0]: c for c in calls}
    assert kinds["ok"] == ("ok", "ok", "2026-11-28", None)
    assert kinds["ok2"][1] == "ok"
    assert kinds["retry"][:3] == ("retry", "bad", "2026-11-28")
    assert "bad input" in kinds["fail"][3]
    assert kinds["dag_failed"][1] == result.run_id
    assert "bad" in kinds["dag_failed"][3]
    with pytest.raises(FlowDefinitionError, match="on_failure_callback must be a callable"):
        DAG("bad_callback", on_failure_callback="notify")
