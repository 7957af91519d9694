"""The benchmark suite still runs: every workload, both sides, at a tiny size.

This checks that each workload completes and reports its figures through the same code as
``python -m benchmarks``; it asserts nothing about timing (figures are measured by the suite,
not by tests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import instructions, runner, scaling
from benchmarks.common import Workload
from benchmarks.stores import PREFIX_ENV, STORE_ENV, drop_schemas

# latency.kafka starts the real Kafka-protocol test broker; ui_pages opens headless Chromium
_MARKS = {"latency.kafka": [pytest.mark.kafka], "ui_pages": [pytest.mark.browser]}
WORKLOADS = [pytest.param(w, id=w.name, marks=_MARKS.get(w.name, [])) for w in runner.WORKLOADS]


def _assert_complete(result: dict[str, object]) -> None:
    name = result["name"]
    assert result["errors"] == {}, f"{name}: {result['errors']}"
    for side in ("evflow", "floor"):
        figures = result[side]
        assert isinstance(figures, dict) and figures, f"{name}/{side}: no figures"
        assert all(math.isfinite(v) for v in figures.values()), f"{name}/{side}: {figures}"
    rows = result["rows"]
    assert isinstance(rows, list) and rows
    for row in rows:
        assert row["evflow"] is not None, f"{name}: no evflow figure for {row['key']}"
        assert row["floor"] is not None, f"{name}: no floor figure for {row['key']}"


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_runs_at_a_tiny_size(
    workload: Workload, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "sqlite" not in workload.stores:  # PostgreSQL only: the session's database
        url = request.getfixturevalue("postgres_database")
        monkeypatch.setenv(STORE_ENV, url)
        monkeypatch.setenv(PREFIX_ENV, "smoke")
        request.addfinalizer(lambda: drop_schemas(url, "smoke"))
    (result,) = runner.run([workload], "smoke", isolate=False)
    _assert_complete(result)
    assert workload.name in runner.table([result])
    json.dumps(result)  # the JSON document holds only plain data


def test_the_command_line_runs_a_side_per_process_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    code = runner.main(["--profile", "smoke", "--only", "etl", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["isolated"] is True
    assert doc["machine"]["cpu_count"] >= 1
    assert doc["machine"]["packages"]["evflow"]
    (result,) = doc["workloads"]
    assert result["name"] == "etl"
    _assert_complete(result)


def test_only_selects_a_group_by_prefix() -> None:
    names = [w.name for w in runner.select(["latency"])]
    assert names == ["latency.emit", "latency.webhook", "latency.kafka", "latency.file"]
    with pytest.raises(SystemExit, match="unknown workload"):
        runner.select(["nope"])
    # The cluster's overhead is measured on PostgreSQL only.
    assert "cluster" not in [w.name for w in runner.select(None)]
    assert "cluster" in [w.name for w in runner.select(None, "postgresql")]
    with pytest.raises(SystemExit, match=r"cluster run.* on PostgreSQL only"):
        runner.select(["cluster"])


def test_the_soak_runs_briefly_and_reports_rss_fds_and_cpu(tmp_path: Path) -> None:
    from benchmarks import soak

    out = tmp_path / "soak.json"
    code = soak.main(["--duration-s", "4", "--rate", "20", "--samples", "2", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0, doc["missed"]
    assert len(doc["samples"]) == 2
    assert all(s["rss_mib"] > 0 and s["fds"] > 0 for s in doc["samples"])
    summary = doc["summary"]
    assert summary["accepted"] > 0
    assert (summary["lost"], summary["doubled"]) == (0, 0)
    assert summary["runs_succeeded"] == summary["accepted"]


def test_the_latency_targets_follow_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emit and webhook p50 must stay under 5 ms on SQLite and under 10 ms on PostgreSQL."""
    emit = next(w for w in runner.WORKLOADS if w.name == "latency.emit")
    figures = {"p50_ms": 7.0}

    def p50_row() -> dict[str, object]:
        return next(r for r in runner.evaluate(emit, figures, figures) if r["key"] == "p50_ms")

    monkeypatch.delenv(STORE_ENV, raising=False)
    assert (p50_row()["target"], p50_row()["met"]) == ("< 5 ms", False)
    monkeypatch.setenv(STORE_ENV, "postgresql://postgres@127.0.0.1/test")
    assert (p50_row()["target"], p50_row()["met"]) == ("< 10 ms", True)


def test_the_scaling_benchmark_writes_both_tables(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    code = scaling.main(["--sizes", "10,50", "--history", "100,300", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert [row["tasks_per_run"] for row in doc["by_run_size"]] == [12, 52]
    assert [row["past_runs"] for row in doc["by_history"]] == [100, 300]
    for row in doc["by_run_size"] + doc["by_history"]:
        assert all(math.isfinite(v) and v >= 0 for v in row.values()), row
        assert row["cpu_us_per_task"] > 0


@pytest.mark.parametrize("side", ["evflow", "floor"])
@pytest.mark.parametrize("workload", sorted(instructions.SIZED))
def test_the_instruction_count_runs_each_side_as_valgrind_would(workload: str, side: str) -> None:
    """The child each count runs under valgrind (valgrind itself is not needed here)."""
    assert instructions.main(["--child", f"{workload}:{side}:3"]) == 0


def test_the_instruction_count_takes_two_rising_sizes() -> None:
    with pytest.raises(SystemExit):
        instructions.main(["--sizes", "250,50"])
