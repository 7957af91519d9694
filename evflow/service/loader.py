"""Find flows, sensors and rules in user files.

A project is a folder with ``flows/`` (modules defining :class:`~evflow.flows.Flow` objects,
``@flow`` functions or Airflow-compat DAGs) and ``sensors/`` (modules defining sensors and
:class:`~evflow.rules.Rule` objects). Every rule created while a project file loads counts,
whether it is assigned to a name, kept in a list or written as a bare ``Rule(...)`` expression;
one that names an unknown flow, or a parameter its flow does not take, is a load error at its
file and line. The project folder is put on
``sys.path`` so ``flows/x.py`` imports as ``flows.x`` and files may import their neighbours.

A file that fails to import becomes a :class:`~evflow.errors.LoadError` naming the file, the
line and the reason — never a bare traceback.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..abc import Sensor
from ..errors import EvflowError, FlowNotFound, LoadError
from ..flows import Flow
from ..rules import Rule

__all__ = ["Deployment", "load_flow_target", "load_flows", "load_project", "load_rules"]


@dataclass
class Deployment:
    """What a project folder defines."""

    root: Path
    flows: dict[str, Flow] = field(default_factory=dict)
    origins: dict[str, Path] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    sensors: list[Sensor] = field(default_factory=list)
    #: where each rule was created (``file:line``), by ``id(rule)``
    rule_origins: dict[int, str] = field(default_factory=dict)

    def rule_origin(self, rule: Rule) -> str:
        return self.rule_origins.get(id(rule), "sensors/")


def _describe_failure(exc: BaseException, file: Path) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.filename or file}:{exc.lineno}: syntax error: {exc.msg}"
    if isinstance(exc, EvflowError):
        return f"{file}: {exc}"
    line = "?"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if os.path.abspath(frame.filename) == str(file):
            line = str(frame.lineno)
            break
    return f"{file}:{line}: {type(exc).__name__}: {exc}"


def _module_name(file: Path, base: Path) -> str:
    rel = file.relative_to(base).with_suffix("")
    return ".".join(rel.parts)


def import_file(file: Path, base: Path | None = None) -> ModuleType:
    """Import ``file`` as a module named after its path below ``base`` (default: its folder).

    ``base`` goes on ``sys.path`` so that the module may import its neighbours.
    """
    file = file.resolve()
    base = (base or _package_root(file)).resolve()
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    name = _module_name(file, base)
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(file):
        return existing
    _claim_folders(name, base)
    try:
        return importlib.import_module(name)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise LoadError(_describe_failure(exc, file)) from exc


def _claim_folders(name: str, base: Path) -> None:
    """Make the folders above module ``name`` (under ``base``) the packages it imports from.

    A folder without ``__init__.py`` (``flows/``) is a namespace package, which any regular
    package of the same name elsewhere on ``sys.path`` would shadow; it is registered as the
    package of that name unless a regular one is already imported.
    """
    parts = name.split(".")[:-1]
    for i in range(1, len(parts) + 1):
        package = ".".join(parts[:i])
        folder = base.joinpath(*parts[:i])
        if (folder / "__init__.py").exists():
            continue
        module = sys.modules.get(package)
        if module is not None and str(folder) in list(getattr(module, "__path__", [])):
            continue
        if module is not None and getattr(module, "__file__", None) is not None:
            continue  # a regular package of that name is in use: leave it
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[package] = importlib.util.module_from_spec(spec)


def _package_root(file: Path) -> Path:
    """The folder above the outermost package holding ``file`` (so relative imports work)."""
    folder = file.parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _py_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*.py")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    )


def flows_in(module: ModuleType) -> list[Flow]:
    """The flows a module defines at top level (each once)."""
    seen: dict[int, Flow] = {}
    for value in vars(module).values():
        if isinstance(value, Flow):
            seen.setdefault(id(value), value)
    return list(seen.values())


def load_flows(
    path: str | os.PathLike[str], *, base: Path | None = None, errors: list[LoadError] | None = None
) -> dict[str, Flow]:
    """Every flow under ``path`` (a file or a folder), by name.

    With ``errors`` given, a broken file is recorded there and the others still load;
    otherwise the first :class:`LoadError` is raised.
    """
    root = Path(path)
    if not root.exists():
        raise LoadError(f"{root}: no such file or folder")
    if base is None:
        base = _package_root(root.resolve() / "__init__.py" if root.is_dir() else root.resolve())
    found: dict[str, Flow] = {}
    for file in _py_files(root.resolve()):
        try:
            module = import_file(file, base)
        except LoadError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        for fl in flows_in(module):
            other = found.get(fl.name)
            if other is not None and other is not fl:
                err = LoadError(f"{file}: flow name {fl.name!r} is also used at {other.location}")
                if errors is None:
                    raise err
                errors.append(err)
                continue
            found[fl.name] = fl
    return found


def load_flow_target(target: str) -> Flow:
    """``path/to/file.py:flow_name``, ``package.module:flow_name``, or a file with one flow."""
    spec, _, name = target.partition(":")
    if spec.endswith(".py") or os.sep in spec or Path(spec).exists():
        path = Path(spec)
        if not path.exists():
            raise LoadError(f"{spec}: no such file")
        flows = load_flows(path)
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as exc:
            raise LoadError(f"cannot import module {spec!r}: {exc}") from None
        except Exception as exc:
            where = Path(getattr(exc, "filename", None) or spec)
            raise LoadError(_describe_failure(exc, where)) from exc
        flows = {f.name: f for f in flows_in(module)}
        for attr, value in vars(module).items():
            if isinstance(value, Flow) and attr == name:
                flows.setdefault(value.name, value)
                name = value.name
    if not flows:
        raise FlowNotFound(f"{spec} defines no flows")
    if not name:
        if len(flows) == 1:
            return next(iter(flows.values()))
        raise FlowNotFound(
            f"{spec} defines several flows ({', '.join(sorted(flows))}); name one: {spec}:FLOW"
        )
    if name in flows:
        return flows[name]
    # Allow the variable name too (``file.py:dag`` for ``dag = DAG("airflow_etl")``).
    for fl in flows.values():
        owner = sys.modules.get(_flow_module(fl))
        if owner is not None and id(vars(owner).get(name)) == id(fl):
            return fl
    raise FlowNotFound(f"{spec} has no flow {name!r}; flows found: {', '.join(sorted(flows))}")


def _flow_module(fl: Flow) -> str:
    for name, module in list(sys.modules.items()):
        if module is not None and fl in vars(module).values():
            return name
    return ""


@contextmanager
def recording_rules(base: Path) -> Iterator[list[tuple[Rule, str]]]:
    """Record every :class:`Rule` created in this block, with the project ``file:line``
    (under ``base``) that created it.

    A bare ``Rule(...)`` expression leaves no name behind to find it by, so creation itself is
    observed: ``Rule.__init__`` is wrapped for the duration of the block (loading is
    single-threaded).
    """
    created: list[tuple[Rule, str]] = []
    original = Rule.__init__
    root = str(base.resolve()) + os.sep

    def init(self: Rule, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append((self, _creator(root)))

    setattr(Rule, "__init__", init)  # noqa: B010 (a method assignment mypy refuses)
    try:
        yield created
    finally:
        setattr(Rule, "__init__", original)  # noqa: B010


def _creator(root: str) -> str:
    """``file:line`` of the innermost frame in a project file (under ``root``)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if name.startswith(root):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "sensors/"


def load_rules(
    path: str | os.PathLike[str],
    *,
    base: Path,
    errors: list[LoadError] | None = None,
    origins: dict[int, str] | None = None,
) -> tuple[list[Rule], list[Sensor]]:
    """The rules created while the modules under ``path`` load, and the sensors they define.

    ``origins`` (if given) receives each rule's ``file:line`` by ``id(rule)``.
    """
    rules: list[Rule] = []
    sensors: list[Sensor] = []
    root = Path(path)
    if not root.exists():
        return rules, sensors
    seen: set[int] = set()

    def keep(rule: Rule, where: str | None) -> None:
        if id(rule) not in seen:
            seen.add(id(rule))
            rules.append(rule)
            if origins is not None and where is not None:
                origins[id(rule)] = where

    for file in _py_files(root.resolve()):
        with recording_rules(base) as created:
            try:
                module = import_file(file, base)
            except LoadError as exc:
                if errors is None:
                    raise
                errors.append(exc)
                continue
        for rule, where in created:
            keep(rule, where)
        for value in vars(module).values():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, Rule):
                    keep(item, str(file))
                elif _is_sensor(item) and all(item is not s for s in sensors):
                    sensors.append(item)
    return rules, sensors


def _is_sensor(value: Any) -> bool:
    return not isinstance(value, type) and isinstance(value, Sensor)


def load_project(
    root: str | os.PathLike[str], *, errors: list[LoadError] | None = None
) -> Deployment:
    """Load ``root/flows`` and ``root/sensors``."""
    base = Path(root).resolve()
    if not base.is_dir():
        raise LoadError(f"{root}: not a folder")
    dep = Deployment(root=base)
    flows_dir = base / "flows"
    if flows_dir.exists():
        dep.flows = load_flows(flows_dir, base=base, errors=errors)
    dep.rules, dep.sensors = load_rules(
        base / "sensors", base=base, errors=errors, origins=dep.rule_origins
    )
    for rule in dep.rules:
        problem = rule_problem(rule, dep.flows)
        if problem is not None:
            err = LoadError(f"{dep.rule_origin(rule)}: {problem}")
            if errors is None:
                raise err
            errors.append(err)
    return dep


def rule_problem(rule: Rule, flows: dict[str, Flow]) -> str | None:
    """Why ``rule`` cannot start its flow (no flow, an unknown one, a parameter it does not
    take), or ``None``."""
    known = ", ".join(sorted(flows)) or "none"
    if rule.flow is None:
        return f"a rule on {_on(rule)!r} names no flow: pass flow='NAME' (flows: {known})"
    fl = flows.get(str(rule.flow))
    if fl is None:
        return (
            f"a rule on {_on(rule)!r} targets flow {rule.flow!r}, which is not defined "
            f"in flows/ (flows: {known})"
        )
    if rule.params and not fl.open_params:
        takes = set(fl.defaults) | fl.required
        unknown = sorted(set(rule.params) - takes)
        if unknown:
            return (
                f"a rule on {_on(rule)!r} passes parameter {', '.join(map(repr, unknown))}, "
                f"which flow {fl.name!r} does not take; its parameters are: "
                f"{', '.join(sorted(takes)) or '(none)'}"
            )
    return None


def _on(rule: Rule) -> str:
    on = rule.on
    if on is None:
        return "*"
    if isinstance(on, str):
        return on
    return str(getattr(on, "name", None) or getattr(on, "source", None) or on)
