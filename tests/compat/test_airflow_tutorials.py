"""Airflow's own tutorial DAGs, with only their imports changed, load and run on evflow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio

from evflow import Engine, RunState, TaskState
from evflow.compat.airflow import DAG
from evflow.run.capture import capture_task_output
from evflow.service.loader import load_flows

DAGS = Path(__file__).parent / "dags"


def load(name: str) -> DAG:
    flows = load_flows(DAGS / f"{name}.py", base=DAGS)
    (dag,) = [f for f in flows.values() if isinstance(f, DAG)]
    return dag


async def test_classic_tutorial_backfill_renders_its_slot(tmp_path: Path) -> None:
    dag = load("tutorial")
    assert dag.task_ids == ["print_date", "sleep", "templated"]
    async with Engine(tmp_path / "e.db") as engine:
        engine.add(dag, schedule=False)
        day = datetime(2026, 11, 28, tzinfo=UTC)
        (run_id,) = await engine.backfill(dag, day, day)
        with anyio.fail_after(60):
            result = await engine.wait(run_id)
        assert result.state is RunState.SUCCEEDED, result.error
        assert {n: t.state for n, t in result.tasks.items()} == dict.fromkeys(
            ["print_date", "sleep", "templated"], TaskState.SUCCEEDED
        )
        lines = [r.message for r in await engine.store.list_logs(run_id, "templated")]
    # the template loop echoes ds and ds + 7 days five times; ds is the backfilled slot
    assert lines == ["2026-11-28", "2026-12-05"] * 5
    assert result.result("templated") == "2026-12-05"


async def test_taskflow_etl_tutorial_passes_results_downstream(tmp_path: Path) -> None:
    dag = load("tutorial_taskflow_api")  # created by a bare call, not assigned to a name
    assert dag.dag_id == "tutorial_taskflow_api"
    assert dag.schedule is None
    assert {n: [u.name for u in dag.nodes[n].upstream] for n in dag.task_ids} == {
        "extract": [],
        "transform": ["extract"],
        "load": ["transform"],
    }
    undo = capture_task_output()  # as `evflow serve` and `evflow run` do
    try:
        async with Engine(tmp_path / "e.db") as engine:
            with anyio.fail_after(20):
                result = await engine.run(dag)
            assert result.state is RunState.SUCCEEDED, result.error
            logs = [r.message for r in await engine.store.list_logs(result.run_id, "load")]
    finally:
        undo()
    assert result.result("extract") == {"1001": 301.27, "1002": 433.21, "1003": 502.22}
    assert logs == ["Total order value is: 1236.70"]


async def test_branching_example_takes_one_branch_and_joins(tmp_path: Path) -> None:
    dag = load("example_branch_operator")
    options = ["branch_a", "branch_b", "branch_c", "branch_d"]
    assert {d.name for d in dag.get_task("branching").downstream} == set(options)
    async with Engine(tmp_path / "e.db") as engine:
        for _ in range(3):
            with anyio.fail_after(20):
                result = await engine.run(dag)
            assert result.state is RunState.SUCCEEDED, result.error
            states = {n: t.state for n, t in result.tasks.items()}
            chosen = result.result("branching")
            assert chosen in options
            for option in options:
                expected = TaskState.SUCCEEDED if option == chosen else TaskState.SKIPPED
                assert states[option] is expected
                assert states[f"follow_{option}"] is expected
            assert states["join"] is TaskState.SUCCEEDED
