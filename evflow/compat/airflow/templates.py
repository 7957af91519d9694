"""Airflow's Jinja templates in operator fields, compiled at load and rendered per run.

Only the DAG author's own strings are templates: each templated field is compiled when the
operator is created, so a syntax error or an unknown variable fails at load naming the task
and the field. At run time the compiled template is rendered with the run's context; values
that come from events (run parameters) are inserted as data and never compiled, so event data
can never run template code. The environment is Jinja's sandbox with ``StrictUndefined``
(Airflow's default). Jinja comes with the ``airflow`` extra (``pip install evflow[airflow]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location

if TYPE_CHECKING:
    from jinja2 import Template

__all__ = ["CONTEXT_NAMES", "Compiled", "compile_value", "has_template", "render_value"]

#: The names a template may use (the task context, plus ``macros`` and ``var``).
CONTEXT_NAMES = frozenset(
    {
        "dag", "dag_run", "ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz",
        "logical_date", "execution_date", "data_interval_start", "data_interval_end",
        "run_id", "params", "task", "ti", "task_instance",
        "templates_dict", "macros", "var", "conf", "map_index", "run_type",
    }
)  # fmt: skip


class Compiled:
    """A compiled template string (the author's), rendered per run."""

    __slots__ = ("source", "template")

    def __init__(self, source: str, template: Template) -> None:
        self.source = source
        self.template = template

    def __repr__(self) -> str:
        return f"Compiled({self.source!r})"


def has_template(value: Any) -> bool:
    """Whether ``value`` (a string, or lists/dicts of them) holds a Jinja template."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False


def _environment() -> Any:
    try:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError:  # pragma: no cover - the extra is installed in tests
        raise FlowDefinitionError(
            "Airflow templates ({{ ... }}) need Jinja: pip install 'evflow[airflow]'",
            location=caller_location(),
        ) from None
    global _ENV
    if _ENV is None:
        _ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    return _ENV


_ENV: Any = None


def compile_value(value: Any, where: str) -> Any:
    """``value`` with each template string replaced by its :class:`Compiled` form.

    A syntax error, or a name that is not in the context, fails here, at load.
    """
    if isinstance(value, str):
        if not has_template(value):
            return value
        env = _environment()
        from jinja2 import TemplateSyntaxError, meta

        try:
            names = meta.find_undeclared_variables(env.parse(value))
            template = env.from_string(value)
        except TemplateSyntaxError as exc:
            raise FlowDefinitionError(
                f"{where}: bad template {value!r}: {exc.message} (line {exc.lineno})",
                location=caller_location(),
            ) from None
        unknown = sorted(set(names) - CONTEXT_NAMES)
        if unknown:
            raise FlowDefinitionError(
                f"{where}: template {value.strip()!r} uses {', '.join(unknown)}, which the "
                f"context does not have; known names: {', '.join(sorted(CONTEXT_NAMES))}",
                location=caller_location(),
            )
        return Compiled(value, template)
    if isinstance(value, Mapping):
        return {k: compile_value(v, where) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(compile_value(v, where) for v in value)
    if isinstance(value, list):
        return [compile_value(v, where) for v in value]
    return value


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with each :class:`Compiled` template rendered with ``context``."""
    if isinstance(value, Compiled):
        return value.template.render(**context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(render_value(v, context) for v in value)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value
