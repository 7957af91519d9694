"""``Variable.get``: Airflow variables from the environment or from ``evflow.toml``.

A variable ``name`` is looked up, in order, in the environment variable
``AIRFLOW_VAR_<NAME>`` (as in Airflow) and in the ``[variables]`` table of the project's
``evflow.toml`` (the nearest one above the DAG file, else above the working directory).
Values from the environment are strings; ``deserialize_json=True`` parses them.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["Variable", "VariableAccessor"]

_MISSING = object()


def _toml_variables(start: Path) -> dict[str, Any]:
    """The ``[variables]`` table of the nearest ``evflow.toml`` at or above ``start``."""
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        file = candidate / "evflow.toml"
        if file.is_file():
            try:
                data = tomllib.loads(file.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return {}
            table = data.get("variables", {})
            return dict(table) if isinstance(table, dict) else {}
    return {}


def _project_start() -> Path:
    from .context import current_dag_file

    where = current_dag_file()
    return Path(where) if where else Path.cwd()


class Variable:
    """Airflow's ``Variable``, read-only: ``Variable.get("name", default_var=None)``."""

    @staticmethod
    def get(key: str, default_var: Any = _MISSING, deserialize_json: bool = False) -> Any:
        """The value of variable ``key``; a missing one without a default is a KeyError."""
        env = os.environ.get(f"AIRFLOW_VAR_{key.upper()}")
        if env is not None:
            if not deserialize_json:
                return env
            try:
                return json.loads(env)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"variable {key!r}: AIRFLOW_VAR_{key.upper()} is not JSON ({exc.msg})"
                ) from None
        table = _toml_variables(_project_start())
        if key in table:
            value = table[key]
            if deserialize_json and isinstance(value, str):
                return json.loads(value)
            return value
        if default_var is not _MISSING:
            return default_var
        raise KeyError(
            f"Variable {key} does not exist: set AIRFLOW_VAR_{key.upper()} or add "
            f"{key} = ... under [variables] in evflow.toml"
        )

    @staticmethod
    def set(key: str, value: Any, **kwargs: Any) -> None:
        """Not available: evflow reads variables from the environment and evflow.toml."""
        raise NotImplementedError(
            f"Variable.set({key!r}): evflow's variables are read-only; set "
            f"AIRFLOW_VAR_{key.upper()} or [variables] in evflow.toml"
        )


class _Values:
    def __init__(self, as_json: bool) -> None:
        self._json = as_json

    def __getattr__(self, key: str) -> Any:
        return Variable.get(key, deserialize_json=self._json)

    def get(self, key: str, default_var: Any = None) -> Any:
        return Variable.get(key, default_var, deserialize_json=self._json)


class VariableAccessor:
    """``var`` in templates: ``{{ var.value.name }}`` and ``{{ var.json.name.field }}``."""

    value = _Values(as_json=False)
    json = _Values(as_json=True)
