"""Argument binding for both flow styles: pure functions over a flow and results."""

from __future__ import annotations

from typing import Any

import pytest

from evflow import Flow, flow, task, unmapped
from evflow.flows.binding import bind, bind_explicit, expand


@task
def source() -> list[int]:
    return [1, 2, 3]


@task
def add(x: int, y: int = 0) -> int:
    return x + y


@flow
def decorated(offset: int = 5) -> None:
    add(source(), y=offset)
    add.map(source(), y=unmapped(offset))


def results(**by_name: Any) -> Any:
    return by_name.get


def test_decorator_style_binds_results_and_params() -> None:
    node = decorated.nodes["add"]
    args, kwargs = bind(node, results(source=[1, 2]), {"offset": 7})
    assert args == [[1, 2]] and kwargs == {"y": 7}


def test_expand_zips_mapped_arguments_and_passes_unmapped_whole() -> None:
    node = decorated.nodes["add_2"]
    calls = expand(node, results(source_2=[10, 20]), {"offset": 1})
    assert calls == [([10], {"y": 1}), ([20], {"y": 1})]


def test_expand_refuses_a_mapped_value_that_is_not_a_list() -> None:
    node = decorated.nodes["add_2"]
    with pytest.raises(TypeError, match="'add_2' maps over int"):
        expand(node, results(source_2=3), {"offset": 1})


def test_explicit_style_matches_names_then_params_then_order() -> None:
    def first() -> int:
        return 1

    def second() -> int:
        return 2

    def combine(second: int, a: int, region: str, *, extra: int = 0, **rest: Any) -> None:
        pass

    with Flow("explicit"):
        n1, n2, c = task(first), task(second), task(combine)
        [n1, n2] >> c
    args, kwargs = bind(c, results(first=1, second=2), {"region": "eu", "dry": True})
    # ``second`` by name; ``a`` takes the remaining upstream result; ``region`` is a param;
    # ``**rest`` receives the params not used by name.
    assert args == []
    assert kwargs == {"second": 2, "a": 1, "region": "eu", "dry": True}
    assert bind_explicit(c, {}, {"first": 1, "second": 2}) == ([], {"second": 2, "a": 1})
