"""Flow definition: both styles, parameters, and validation errors that say what and where."""

from __future__ import annotations

import inspect
import os

import pytest

from evflow import Flow, flow, task
from evflow.errors import CycleError, DuplicateTaskError, FlowDefinitionError, ParamError
from evflow.flows.dag import Node
from evflow.flows.tasks import Task

HERE = os.path.basename(__file__)


def next_line() -> int:
    """The line number just after the caller's line (where the statement under test is)."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def edges(fl: Flow) -> set[tuple[str, str]]:
    return {(u.name, n.name) for n in fl.nodes.values() for u in n.upstream}


def assert_names(err: FlowDefinitionError, flow_name: str, task_name: str, line: int) -> None:
    """The message names the flow, the task and the file:line of the definition."""
    msg = str(err)
    assert repr(flow_name) in msg, msg
    assert task_name in msg, msg
    assert f"{HERE}:{line}" in msg, msg
    assert err.flow == flow_name
    assert err.location is not None and err.location.endswith(f"{HERE}:{line}")


# -- plain functions used by the explicit style -----------------------------------------------
def fa() -> int:
    return 1


def fb(fa: int) -> int:
    return fa + 1


def fc() -> int:
    return 3


def fd() -> int:
    return 4


# -- decorator style -------------------------------------------------------------------------
@task
async def extract(path: str) -> list[int]:
    return [len(path)]


@task(retries=2, timeout=5, pool="db", priority=3)
def transform(rows: list[int]) -> list[int]:
    return [r * 2 for r in rows]


@task
def load(rows: list[int], mode: str = "append") -> int:
    return len(rows)


def test_task_decorator_options_and_plain_call() -> None:
    assert isinstance(transform, Task)
    assert transform.name == "transform"
    assert transform.options.retries == 2
    assert transform.options.timeout_s == 5
    assert transform.options.pool == "db"
    assert transform.options.priority == 3
    assert extract.is_async and not transform.is_async
    # Outside a flow a task is still the plain function.
    assert transform([1, 2]) == [2, 4]


def test_decorator_style_results_are_dependencies_and_params_become_run_params() -> None:
    @flow
    def etl(path: str, mode: str = "append") -> None:
        load(transform(extract(path)), mode=mode)

    assert isinstance(etl, Flow)
    assert etl.name == "etl"
    assert set(etl.nodes) == {"extract", "transform", "load"}
    assert edges(etl) == {("extract", "transform"), ("transform", "load")}
    assert [n.name for n in etl.order()] == ["extract", "transform", "load"]
    assert etl.required == {"path"}
    assert etl.defaults == {"mode": "append"}
    assert etl.bind_params({"path": "x.csv"}) == {"path": "x.csv", "mode": "append"}
    assert etl.bind_params({"path": "x.csv", "mode": "replace"})["mode"] == "replace"


def test_decorator_style_missing_or_unknown_param_is_param_error() -> None:
    @flow
    def etl(path: str) -> None:
        load(transform(extract(path)))

    with pytest.raises(ParamError, match="needs parameter 'path'"):
        etl.bind_params({})
    with pytest.raises(ParamError, match="no parameter 'nope'") as info:
        etl.bind_params({"path": "a", "nope": 1})
    assert "path" in str(info.value)  # it lists the parameters it does have


def test_decorator_style_same_task_twice_gets_distinct_names() -> None:
    @flow
    def twice(path: str) -> None:
        a = extract(path)
        b = extract(path)
        load(a)
        load(b)

    assert set(twice.nodes) == {"extract", "extract_2", "load", "load_2"}
    assert edges(twice) == {("extract", "load"), ("extract_2", "load_2")}


def test_flow_version_changes_with_the_definition() -> None:
    @flow(name="v")
    def v1(path: str) -> None:
        load(extract(path))

    @flow(name="v")
    def v2(path: str) -> None:
        load(transform(extract(path)))

    assert v1.version != v2.version
    assert v1.version == v1.version and len(v1.version) == 16


# -- explicit style --------------------------------------------------------------------------
def test_explicit_style_chain() -> None:
    with Flow("chain") as dag:
        a, b, c = task(fa), task(fb), task(fc)
        a >> b >> c
    assert all(isinstance(n, Node) for n in (a, b, c))
    assert edges(dag) == {("fa", "fb"), ("fb", "fc")}
    assert [n.name for n in dag.order()] == ["fa", "fb", "fc"]
    assert dag.is_chain  # one task ready at a time: its runs open no task group


def test_explicit_style_fan_out_and_fan_in() -> None:
    with Flow("diamond") as dag:
        a, b, c, d = task(fa), task(fb), task(fc), task(fd)
        a >> [b, c] >> d
    assert edges(dag) == {("fa", "fb"), ("fa", "fc"), ("fb", "fd"), ("fc", "fd")}
    assert not dag.is_chain

    with Flow("join") as dag2:
        a, b, c = task(fa), task(fb), task(fc)
        [a, b] >> c
    assert edges(dag2) == {("fa", "fc"), ("fb", "fc")}
    assert not dag2.is_chain  # two roots start at once

    with Flow("left") as dag3:
        a, b = task(fa), task(fb)
        b << a
    assert edges(dag3) == {("fa", "fb")}


def test_explicit_style_names_and_options() -> None:
    with Flow("opts") as dag:
        a = task(fa, name="first", retries=4, trigger_rule="all_done")
        b = task(fa, name="second")
        a >> b
    assert set(dag.nodes) == {"first", "second"}
    assert dag.nodes["first"].options.retries == 4
    assert dag.nodes["first"].options.trigger_rule == "all_done"
    assert dag.nodes["second"].options.retries == 0


def test_explicit_flow_without_params_accepts_any_and_declared_params_are_checked() -> None:
    with Flow("open") as dag:
        task(fa)
    assert dag.bind_params({"anything": 1}) == {"anything": 1}

    with Flow("closed", params={"day": "today"}) as closed:
        task(fa)
    assert closed.bind_params({}) == {"day": "today"}
    with pytest.raises(ParamError, match="no parameter 'other'"):
        closed.bind_params({"other": 1})


# -- validation errors: what, which flow, which task, where ------------------------------------
def test_cycle_is_refused_with_flow_task_and_location() -> None:
    with pytest.raises(CycleError) as info, Flow("cyclic"):
        a, b, c = task(fa), task(fb), task(fc)
        a >> b >> c
        line = next_line()
        c >> a
    assert_names(info.value, "cyclic", "fc", line)
    assert "fa -> fb -> fc -> fa" in str(info.value)


def test_self_loop_is_a_cycle() -> None:
    with pytest.raises(CycleError) as info, Flow("selfish"):
        a = task(fa)
        line = next_line()
        a >> a
    assert_names(info.value, "selfish", "fa", line)


def test_duplicate_task_name_is_refused_with_both_locations() -> None:
    with pytest.raises(DuplicateTaskError) as info, Flow("dupes"):
        first = next_line()
        task(fa, name="same")
        line = next_line()
        task(fc, name="same")
    assert_names(info.value, "dupes", "'same'", line)
    assert f"{HERE}:{first}" in str(info.value)  # where the first one was defined


def test_reference_to_a_task_of_another_flow_explicit_style() -> None:
    with Flow("one"):
        a = task(fa)
    with pytest.raises(FlowDefinitionError) as info, Flow("two"):
        b = task(fb)
        line = next_line()
        a >> b
    msg = str(info.value)
    assert "'one'" in msg and "'two'" in msg and "'fb'" in msg, msg
    assert f"{HERE}:{line}" in msg


def test_reference_to_a_task_of_another_flow_decorator_style() -> None:
    with Flow("one"):
        foreign = task(fa)

    line = 0
    with pytest.raises(FlowDefinitionError) as info:

        @flow
        def borrower() -> None:
            nonlocal line
            line = next_line()
            load(foreign)

    assert_names(info.value, "borrower", "'fa'", line)
    assert "'one'" in str(info.value)


def test_non_callable_task_is_refused() -> None:
    with pytest.raises(FlowDefinitionError) as info, Flow("broken"):
        line = next_line()
        task(42, name="not_a_function")  # type: ignore[call-overload]
    assert_names(info.value, "broken", "not_a_function", line)
    assert "not callable" in str(info.value)


def test_ordering_against_something_that_is_not_a_task() -> None:
    with pytest.raises(FlowDefinitionError) as info, Flow("weird"):
        a = task(fa)
        line = next_line()
        a >> "fb"
    assert_names(info.value, "weird", "fa", line)


def test_bad_options_are_refused_at_definition() -> None:
    with pytest.raises(FlowDefinitionError, match="unknown trigger_rule 'sometimes'"):
        task(fa, trigger_rule="sometimes")
    with pytest.raises(FlowDefinitionError, match="retries must be >= 0"):
        task(fa, retries=-1)
    with pytest.raises(FlowDefinitionError, match="timeout must be > 0"):
        task(fa, timeout=0)
    with pytest.raises(FlowDefinitionError, match="unexpected keyword argument 'colour'"):
        task(fa, colour="red")


def test_empty_flow_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match="flow 'empty' has no tasks"), Flow("empty"):
        pass


def test_map_outside_a_flow_is_refused() -> None:
    with pytest.raises(FlowDefinitionError, match=r"\.map\(\) is only valid inside a flow"):
        load.map([[1], [2]])


def test_a_parameter_used_as_a_value_while_the_graph_is_built_says_how_to_do_it() -> None:
    @task
    def step(i: int) -> int:
        return i

    def loop_over(n: int) -> None:
        for i in range(n):  # the graph is built once: n has no value yet
            step(i)

    with pytest.raises(FlowDefinitionError) as caught:
        flow(loop_over)
    message = str(caught.value)
    assert "parameter 'n'" in message and "range()" in message
    assert "test_flows.py:" in message  # the user's own line
    assert ".map" in message and "branch=True" in message

    def choose(mode: str) -> None:
        if mode == "full":  # compared while the graph is built: no value yet
            step(1)

    with pytest.raises(FlowDefinitionError, match=r"parameter 'mode'.*compared"):
        flow(choose)
