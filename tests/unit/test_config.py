"""Every numeric setting of evflow.toml and EVFLOW_* is checked for its type and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from evflow import Pool
from evflow.cluster import ClusterOptions
from evflow.errors import ConfigError
from evflow.service.config import load_config


def config_with(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> object:
    (tmp_path / "evflow.toml").write_text(toml)
    return load_config(tmp_path, env=env or {})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[http]\nport = 65536", "[http].port: 65536 is out of range; use a port"),
        ("[http]\nport = true", "[http].port: True is not a whole number"),
        ("[engine]\nmax_tasks = 0", "[engine].max_tasks: 0 is out of range; use a whole number"),
        ("[engine]\nmax_threads = 2.5", "[engine].max_threads: 2.5 is not a whole number"),
        ("[engine]\nmax_backlog = -5", "[engine].max_backlog: -5 is out of range"),
        ("[engine]\ngrace_period_s = -1", "[engine].grace_period_s: -1 is out of range"),
        ("[engine]\ngrace_period_s = nan", "[engine].grace_period_s: nan is not a finite number"),
        ('[engine]\ngrace_period_s = "soon"', "[engine].grace_period_s: 'soon' is not a number"),
        ("[kafka]\nfetch_max_wait_ms = -1", "[kafka].fetch_max_wait_ms: -1 is out of range"),
        ("[pools]\nwarehouse = 0", "[pools].warehouse: 0 is out of range; use a whole number"),
        ('[pools]\nwarehouse = "two"', "[pools].warehouse: 'two' is not a whole number"),
        ("[pools]\nwarehouse = { slots = 0 }", "[pools].warehouse.slots: 0 is out of range"),
        ('[pools]\nwarehouse = { scope = "cluster" }', "[pools].warehouse: missing slots"),
        (
            '[pools]\nwarehouse = { slots = 2, scope = "global" }',
            "[pools].warehouse: scope 'global' is not one of 'instance', 'cluster'",
        ),
        (
            "[pools]\nwarehouse = { slots = 2, size = 3 }",
            "[pools].warehouse: unknown key 'size'; known keys: slots, scope",
        ),
    ],
)
def test_a_bad_number_in_evflow_toml_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(tmp_path, toml)
    assert f"evflow.toml {message}" in str(raised.value)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("EVFLOW_HTTP_PORT", "99999", "EVFLOW_HTTP_PORT: '99999' is out of range"),
        ("EVFLOW_HTTP_PORT", "80.5", "EVFLOW_HTTP_PORT: '80.5' is not a whole number"),
        ("EVFLOW_ENGINE_MAX_TASKS", "none", "EVFLOW_ENGINE_MAX_TASKS: 'none' is not a whole"),
        ("EVFLOW_POOLS_WAREHOUSE", "-2", "EVFLOW_POOLS_WAREHOUSE: '-2' is out of range"),
        ("EVFLOW_POOLS_WAREHOUSE", "2:all", "EVFLOW_POOLS_WAREHOUSE: scope 'all' is not one"),
    ],
)
def test_a_bad_number_in_the_environment_names_the_variable(
    tmp_path: Path, var: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(tmp_path, "", {var: value})
    assert message in str(raised.value)


def test_good_numbers_from_toml_and_environment(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={})
    assert (cfg.http.port, cfg.engine.max_tasks, cfg.engine.grace_period_s) == (8000, None, 30.0)
    (tmp_path / "evflow.toml").write_text(
        "[http]\nport = 0\n[engine]\nmax_tasks = 8\ngrace_period_s = 2\n[pools]\nw = 3\n"
    )
    env = {
        "EVFLOW_ENGINE_MAX_THREADS": "7",
        "EVFLOW_KAFKA_FETCH_MAX_WAIT_MS": "",
        "EVFLOW_POOLS_X": "2",
        "EVFLOW_HTTP_ENABLED": "off",
    }
    cfg = load_config(tmp_path, env=env)
    assert cfg.http.port == 0 and cfg.http.enabled is False
    assert (cfg.engine.max_tasks, cfg.engine.max_threads) == (8, 7)
    assert cfg.engine.grace_period_s == 2.0 and isinstance(cfg.engine.grace_period_s, float)
    assert cfg.kafka.fetch_max_wait_ms is None
    assert cfg.pools == {"w": Pool(3), "x": Pool(2)}


def test_a_pool_counted_across_the_cluster(tmp_path: Path) -> None:
    (tmp_path / "evflow.toml").write_text(
        '[pools]\nwarehouse = { slots = 4, scope = "cluster" }\nlocal = { slots = 2 }\n'
    )
    cfg = load_config(tmp_path, env={"EVFLOW_POOLS_API": "3:cluster"})
    assert cfg.pools == {
        "warehouse": Pool(4, "cluster"),
        "local": Pool(2, "instance"),
        "api": Pool(3, "cluster"),
    }


def test_the_cluster_can_be_turned_off_for_a_postgres_store_run_alone(tmp_path: Path) -> None:
    assert load_config(tmp_path, env={}).cluster.options() == ClusterOptions()
    (tmp_path / "evflow.toml").write_text("[cluster]\nenabled = false\nmax_runs = 7\n")
    cfg = load_config(tmp_path, env={})
    assert cfg.cluster.options() == ClusterOptions(max_runs=7, enabled=False)
    cfg = load_config(tmp_path, env={"EVFLOW_CLUSTER_ENABLED": "true"})
    assert cfg.cluster.options().enabled is True
    with pytest.raises(ConfigError, match="EVFLOW_CLUSTER_ENABLED"):
        load_config(tmp_path, env={"EVFLOW_CLUSTER_ENABLED": "sometimes"})
