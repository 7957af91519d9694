"""Frozen records that are quick to declare and quick to build.

``@record`` makes a frozen, slotted dataclass, as ``@dataclass(frozen=True, slots=True)``
would, at a fraction of the cost on both ends:

- **Declaring.** ``dataclasses`` compiles six methods per frozen class from source, one
  ``exec`` each: about 0.5 ms a class, and ``import evflow`` declares over fifty. Here
  ``dataclasses`` only collects the fields and builds the slots; equality, hashing, ``repr``,
  the refusal of assignment and pickling are functions shared by every record (equality and
  hashing compare the fields through one ``operator.attrgetter``), and only ``__init__`` is
  compiled per class.
- **Building.** A frozen dataclass's ``__init__`` sets each field with
  ``object.__setattr__``, looked up and called once per field: a 13-field task record took
  about 2.3 µs, and the engine builds several per task. This ``__init__`` sets each slot
  through its descriptor instead, about twice as fast.

What a user sees is what a frozen dataclass gives: ``dataclasses.fields``, ``replace`` and
``asdict`` work; fields with ``compare=False`` or ``repr=False`` are left out as they would
be; assigning a field raises :class:`dataclasses.FrozenInstanceError`; ``__post_init__`` runs.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, FrozenInstanceError, dataclass, field, fields
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

__all__ = ["record", "slot_function"]

T = TypeVar("T", bound=type)

_FACTORY: Any = object()  # stands for "not given" where a field's default is a factory


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def record(cls: T) -> T:
    """Make ``cls`` a frozen, slotted dataclass (see the module's docstring)."""
    own = dict(vars(cls))  # what the class body defines itself is kept, as dataclasses keeps it
    for name in ("__setattr__", "__delattr__"):
        if name in own:
            raise TypeError(f"cannot overwrite {name} in frozen class {cls.__qualname__}")
    made: Any = dataclass(init=False, repr=False, eq=False, slots=True)(cls)
    every = fields(made)
    methods = {
        "__repr__": _repr,
        "__eq__": _eq,
        "__setattr__": _setattr,
        "__delattr__": _delattr,
        "__getstate__": _getstate,
        "__setstate__": _setstate,
    }
    for name, method in methods.items():
        if name not in own:
            setattr(made, name, method)
    if "__init__" not in own:
        made.__init__ = _init(made, every)
    # A body defining __eq__ alone gets ``__hash__ = None`` from Python: not a hash of its own.
    if "__hash__" not in own or (own["__hash__"] is None and "__eq__" in own):
        made.__hash__ = _hash
    made._record_repr = tuple(f.name for f in every if f.repr)
    compared = [f.name for f in every if f.compare]
    hashed = [f.name for f in every if (f.compare if f.hash is None else f.hash)]
    # attrgetter of one name returns the value, of none fails: always a tuple of values.
    made._record_key = _getter(compared)
    made._record_hash_key = _getter(hashed)
    made._record_fields = tuple(f.name for f in every)
    # What dataclasses itself would report for @dataclass(frozen=True, slots=True).
    params = made.__dataclass_params__
    params.init = params.repr = params.eq = params.frozen = True
    return made  # type: ignore[no-any-return]


def _getter(names: list[str]) -> Any:
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _init(cls: Any, every: tuple[Field[Any], ...]) -> Any:
    """An ``__init__`` taking the dataclass's arguments, setting each slot's descriptor."""
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    args: list[str] = ["self"]
    values: dict[str, str] = {}
    for f in every:
        if not f.init:
            raise TypeError(f"{cls.__qualname__}.{f.name} is not an __init__ argument")
        values[f.name] = f.name
        if f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_FACTORY")
            values[f.name] = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
        else:
            args.append(f.name)
    after = "self.__post_init__()" if hasattr(cls, "__post_init__") else ""
    return slot_function(cls, "__init__", args, "self", values, env, after=after)


def slot_function(
    cls: Any,
    name: str,
    params: list[str],
    target: str,
    values: dict[str, str],
    env: dict[str, Any],
    *,
    before: str = "",
    after: str = "",
) -> Any:
    """Compile ``def name(*params)`` for ``cls``: one straight line of calls setting each slot
    of ``target`` through its descriptor to the expression ``values[field]``, between the lines
    ``before`` and ``after``. A descriptor's ``__set__`` called directly costs about half of
    ``object.__setattr__``, which a frozen dataclass's methods call for every field."""
    lines = [before] if before else []
    for field_name, value in values.items():
        env[f"_set_{field_name}"] = vars(cls)[field_name].__set__
        lines.append(f"_set_{field_name}({target}, {value})")
    if after:
        lines.append(after)
    source = f"def {name}({', '.join(params)}):\n" + "".join(
        f"    {line}\n" for line in lines or ["pass"]
    )
    exec(source, env)  # as dataclasses itself does: one straight-line function per class
    made = env[name]
    made.__qualname__ = f"{cls.__qualname__}.{name}"
    made.__module__ = cls.__module__
    return made


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._record_repr)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self._record_key
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self._record_hash_key(self))


def _setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, name) for name in self._record_fields]


def _setstate(self: Any, state: list[Any]) -> None:
    for name, value in zip(self._record_fields, state, strict=True):
        object.__setattr__(self, name, value)
