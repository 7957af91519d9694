"""quick_init: the same records as the dataclass's own ``__init__`` builds, only faster."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, dataclass, field, replace
from typing import Any

import pytest

from evflow.frozen import quick_init
from evflow.records import RunRecord, TaskRecord, evolve
from evflow.states import RunState, TaskState


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


@quick_init
@dataclass(frozen=True, slots=True)
class Quick:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


def test_the_same_arguments_give_the_same_record() -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1, "x"), {}),
        ((1,), {"c": [2]}),
        ((), {"a": 3, "b": "y"}),
    ]
    for args, kwargs in cases:
        plain, quick = Plain(*args, **kwargs), Quick(*args, **kwargs)
        assert (quick.a, quick.b, quick.c) == (plain.a, plain.b, plain.c)
    assert Quick(1).c == [] and Quick(1).c is not Quick(1).c  # a fresh default each time
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]  # a required argument is still required
    with pytest.raises(TypeError):
        Quick(1, d=2)  # type: ignore[call-arg]  # and an unknown one refused


def test_records_stay_frozen_equal_hashable_and_picklable() -> None:
    task = TaskRecord("r", "t", "t", TaskState.PENDING, queued_at=1.0)
    same = TaskRecord(run_id="r", name="t", node="t", state=TaskState.PENDING, queued_at=1.0)
    assert task == same and hash(task) == hash(same)
    with pytest.raises(FrozenInstanceError):
        task.state = TaskState.RUNNING  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(task)) == task
    assert replace(task, attempt=2).attempt == 2
    run = RunRecord("r", "f", "v", {}, RunState.QUEUED, 1.0)
    assert run.trigger == {} and run.tasks == ()
    assert evolve(run, state=RunState.RUNNING, started_at=2.0) == replace(
        run, state=RunState.RUNNING, started_at=2.0
    )
    with pytest.raises(TypeError, match="RunRecord has no field 'stage'"):
        evolve(run, stage=RunState.RUNNING)


def test_only_frozen_slotted_dataclasses_are_taken() -> None:
    @dataclass
    class Mutable:
        a: int

    with pytest.raises(TypeError, match="frozen, slotted"):
        quick_init(Mutable)

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        quick_init(Checked)
