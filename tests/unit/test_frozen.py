"""``@record``: what ``@dataclass(frozen=True, slots=True)`` gives, declared and built faster."""

from __future__ import annotations

import copy
import pickle
from dataclasses import (
    FrozenInstanceError,
    asdict,
    astuple,
    dataclass,
    field,
    fields,
    is_dataclass,
    replace,
)
from typing import Any

import pytest

from evflow.frozen import record
from evflow.records import RunRecord, TaskRecord, evolve, evolver
from evflow.states import RunState, TaskState


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)
    seen: float = field(default=0.0, compare=False)
    secret: str = field(default="", repr=False)


@record
class Quick:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)
    seen: float = field(default=0.0, compare=False)
    secret: str = field(default="", repr=False)


CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1,), {}),
    ((1, "x"), {}),
    ((1,), {"c": [2]}),
    ((), {"a": 3, "b": "y", "seen": 2.5, "secret": "s"}),
]


def test_the_same_arguments_give_the_same_record() -> None:
    for args, kwargs in CASES:
        plain, quick = Plain(*args, **kwargs), Quick(*args, **kwargs)
        assert astuple(quick) == astuple(plain)
        assert asdict(quick) == asdict(plain)
        assert repr(quick) == repr(plain).replace("Plain", "Quick")
    assert Quick(1).c == [] and Quick(1).c is not Quick(1).c  # a fresh default each time
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]  # a required argument is still required
    with pytest.raises(TypeError):
        Quick(1, d=2)  # type: ignore[call-arg]  # and an unknown one refused


def test_equality_and_hashing_follow_the_compared_fields() -> None:
    for args, kwargs in CASES:
        one, two = Quick(*args, **kwargs), Quick(*args, **kwargs)
        assert one == two and (one != two) is False
    assert Quick(1, c=[]) != Quick(2, c=[])
    assert Quick(1, b="x") != Quick(1, b="y")
    # ``compare=False``: left out of equality and hashing, as the dataclass leaves it out.
    assert Quick(1, seen=1.0) == Quick(1, seen=2.0)
    frozen = (Quick(1, c=()),)  # type: ignore[arg-type]
    assert hash(Quick(1, seen=1.0, c=())) == hash(Quick(1, seen=2.0, c=()))  # type: ignore[arg-type]
    assert frozen[0] in {Quick(1, seen=9.0, c=())}  # type: ignore[arg-type]
    others: list[object] = [Plain(1), (1, "b", [], 0.0, "")]
    assert all(Quick(1) != other for other in others)
    with pytest.raises(TypeError, match="unhashable"):
        hash(Quick(1))  # a list field, as with the dataclass


def test_a_record_is_frozen_picklable_and_a_dataclass() -> None:
    quick = Quick(1, "x", [2], 3.0, "s")
    match quick:
        case Quick(a, b):
            assert (a, b) == (1, "x")
        case _:
            pytest.fail("a record matches its fields in order")
    with pytest.raises(FrozenInstanceError, match="'a'"):
        quick.a = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError, match="'a'"):
        del quick.a
    with pytest.raises(FrozenInstanceError):
        quick.other = 1  # type: ignore[attr-defined]
    assert not hasattr(quick, "__dict__")  # slotted
    for back in (pickle.loads(pickle.dumps(quick)), copy.deepcopy(quick), copy.copy(quick)):
        assert back == quick and astuple(back) == astuple(quick)
    assert replace(quick, b="y") == Quick(1, "y", [2], 3.0, "s")
    assert is_dataclass(Quick) and [f.name for f in fields(Quick)] == [
        f.name for f in fields(Plain)
    ]
    params = Quick.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and params.eq and params.init and params.repr


def test_post_init_runs_and_a_field_outside_init_is_refused() -> None:
    @record
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must not be negative")

    assert Checked(1).a == 1
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)

    with pytest.raises(TypeError, match="not an __init__ argument"):

        @record
        class Hidden:
            a: int = field(default=0, init=False)


def test_records_stay_frozen_equal_hashable_and_picklable() -> None:
    task = TaskRecord("r", "t", "t", TaskState.PENDING, queued_at=1.0)
    same = TaskRecord(run_id="r", name="t", node="t", state=TaskState.PENDING, queued_at=1.0)
    assert task == same and hash(task) == hash(same)
    assert task != evolve(task, attempt=1)
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


def test_what_the_class_body_defines_is_kept() -> None:
    @record
    class Named:
        name: str
        size: int = 0

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Named) and self.name.lower() == other.name.lower()

        def __repr__(self) -> str:
            return f"<{self.name}>"

    assert Named("A", 1) == Named("a", 2) and repr(Named("A")) == "<A>"
    assert hash(Named("A", 1)) != hash(Named("A", 2))  # the fields' hash, as dataclasses adds

    @record
    class Keyed:
        name: str

        def __hash__(self) -> int:
            return 7

    assert hash(Keyed("x")) == 7

    with pytest.raises(TypeError, match="cannot overwrite __setattr__"):

        @record
        class Mutable:
            name: str

            def __setattr__(self, name: str, value: object) -> None:
                object.__setattr__(self, name, value)


def test_an_evolved_record_is_the_replaced_one_and_the_original_stays() -> None:
    task = TaskRecord("r", "t", "t", TaskState.PENDING, queued_at=1.0, error="e")
    cases: list[dict[str, Any]] = [
        {},
        {"state": TaskState.RUNNING, "attempt": 1, "started_at": 2.0, "error": None},
        {"result": b"[1]", "ended_at": 3.0, "waiting": None},
    ]
    for changes in cases:
        made = evolver(TaskRecord)(task, **changes)
        assert made == replace(task, **changes) == evolve(task, **changes)
        assert type(made) is TaskRecord and made is not task
    assert task == TaskRecord("r", "t", "t", TaskState.PENDING, queued_at=1.0, error="e")
    assert evolver(TaskRecord) is evolver(TaskRecord)  # compiled once per class
    with pytest.raises(TypeError, match="TaskRecord has no field 'stage'"):
        evolve(task, stage=TaskState.RUNNING)
    with pytest.raises(TypeError):
        evolver(TaskRecord)(task, TaskState.RUNNING)  # fields are keyword-only
