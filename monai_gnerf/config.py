"""Configuration dataclasses: one serialization, one type check, one source of defaults and help.

Every option of every job lives in exactly one dataclass field (its default, its type, and its
help text in the class docstring's ``Args:``/``Attributes:`` section). The command line, the
MONAI bundle and the 3D Slicer module are fed from those fields:

* :class:`Config`: the base of every config dataclass; on construction each field is checked and
  converted against its type (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices,
  ``X | None``, tuples and nested configs) and its allowed range (:class:`Range`, attached as
  ``Annotated[float, Range(gt=0)]`` or one of the aliases :data:`PositiveInt`,
  :data:`PositiveFloat`, ...), each failure one sentence naming the field, its value and what is
  allowed, so the library, the CLI, the bundle (which builds configs with ``_target_``) and Slicer
  share one check before any work starts.
* :func:`config_to_dict` / :func:`config_from_dict`: the JSON form of any config (nested configs
  become nested objects, tuples become lists); unknown keys are refused.
* :func:`config_leaves` flattens a config class into its leaf fields (the CLI's options).
* :func:`field_docs` reads a Google-style docstring's argument descriptions (the CLI's help).
* :func:`parse_json`: the one JSON reader of the project's files (geometry, projection metadata).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from monai_gnerf.errors import GnerfInputError

__all__ = [
    "Config",
    "ConfigLeaf",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "UnitInterval",
    "as_bool",
    "as_flag",
    "coerce",
    "config_from_dict",
    "config_leaves",
    "config_to_dict",
    "field_docs",
    "nest",
    "parse_json",
    "path_text",
]

T = TypeVar("T")
_SECTION = re.compile(r"^\s*(Args|Arguments|Attributes|Parameters):\s*$")
_ENTRY = re.compile(r"^(\s*)(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed interval of a numeric config field; any bound may be left open (``None``).

    Args:
        ge: smallest allowed value.
        gt: every value must exceed this.
        le: largest allowed value.
        lt: every value must stay below this.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        """Whether ``value`` is finite and inside the interval."""
        if not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        """The bounds as text, e.g. ``">= 1"`` or ``"> 0 and <= 1"``."""
        bounds = [(">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)]
        return " and ".join(f"{op} {bound:g}" for op, bound in bounds if bound is not None)


PositiveInt = Annotated[int, Range(ge=1)]
"""An integer >= 1 (counts, sizes, intervals in steps)."""
NonNegativeInt = Annotated[int, Range(ge=0)]
"""An integer >= 0 (step counts that may be zero)."""
PositiveFloat = Annotated[float, Range(gt=0)]
"""A finite number > 0 (lengths in mm, seconds, learning rates, attenuations)."""
NonNegativeFloat = Annotated[float, Range(ge=0)]
"""A finite number >= 0 (loss weights)."""
UnitInterval = Annotated[float, Range(ge=0, le=1)]
"""A number in [0, 1]."""
Fraction = Annotated[float, Range(gt=0, le=1)]
"""A number in (0, 1]."""


class Config:
    """Base of the config dataclasses: fields are type-checked and converted when an instance is made.

    Class attributes ``config_kind`` (a name for messages) and ``config_error`` (the exception
    class, a :class:`GnerfInputError`) may be overridden. A subclass with its own
    ``__post_init__`` calls ``super().__post_init__()`` first.
    """

    config_kind: ClassVar[str] = ""
    config_error: ClassVar[type[GnerfInputError]] = GnerfInputError

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Refuse an unknown field by name (a bundle override ``--fit#bogus 3``), before the
        dataclass ``__init__`` would raise a bare ``TypeError``."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise cls.config_error(f"{cls.__name__} has no option {', '.join(unknown)}; its options: {', '.join(names)}.")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            checked = coerce(value, hints[f.name], f.name, self.config_error)
            if checked is not value:
                object.__setattr__(self, f.name, checked)  # frozen configs too


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dictionary of a config dataclass (nested configs as dicts, tuples as lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], error: type[GnerfInputError] = GnerfInputError) -> T:
    """Build a config dataclass from (possibly partial) JSON data, checking names and types.

    Args:
        cls: the dataclass.
        data: field values; missing fields take their defaults, nested configs may be dicts.
        error: the exception class raised for bad data.

    Raises:
        GnerfInputError (or ``error``): unknown field, or a value of the wrong type or choice.
    """
    if not isinstance(data, Mapping):
        raise error(f"{_kind(cls)} must be a JSON object, got {type(data).__name__}.")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"unknown {_kind(cls)} field(s) {unknown}; known fields: {sorted(known)}.")
    missing = [name for name, f in known.items() if name not in data and _is_required(f)]
    if missing:
        raise error(f"incomplete {_kind(cls)}: it lacks the required field(s) {missing}.")
    hints = _hints(cls)
    values = {name: coerce(value, hints[name], name, error) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise error(f"incomplete {_kind(cls)}: {err}.") from None


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _kind(cls: type) -> str:
    return getattr(cls, "config_kind", "") or cls.__name__


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _ranges(tp: Any) -> tuple[Any, list[Range]]:
    """The type under ``Annotated`` and its :class:`Range` bounds (``tp`` itself and none otherwise)."""
    if typing.get_origin(tp) is Annotated:
        return tp.__origin__, [m for m in tp.__metadata__ if isinstance(m, Range)]
    return tp, []


def _describe(tp: Any) -> str:
    tp, ranges = _ranges(tp)
    if ranges:
        return f"{_describe(tp)} {' and '.join(r.describe() for r in ranges)}"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        choices = [repr(a) for a in args]
        return choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + f" or {choices[-1]}"
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list, each item {_describe(args[0])}" if args[-1] is Ellipsis else f"a list of {len(args)} values"
    if dataclasses.is_dataclass(tp):
        return f"a {_kind(tp)} object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key named twice is an error (``json`` would keep the last silently)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key(s) {repeated} given more than once")
    return dict(pairs)


def parse_json(data: str | bytes, what: str, error: type[GnerfInputError] = GnerfInputError) -> Any:
    """JSON text (UTF-8, -16 or -32 when given as bytes) as Python values, or one error line.

    Args:
        data: the JSON text, or a file's bytes (their encoding detected as :func:`json.loads` does).
        what: what the text is, for the message (e.g. ``"geometry JSON"`` or a file's path).
        error: the error class raised.

    Raises:
        error: the text is not JSON (syntax, encoding, nesting too deep, a number too long to
            read) or an object names a key twice.
    """
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise error(f"{what} is not valid JSON: it is nested too deeply.") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, duplicate keys, over-long integers
        raise error(f"{what} is not valid JSON: {str(err).splitlines()[0]}.") from None


def as_bool(value: Any) -> bool | None:
    """A boolean, or its spelling on a command line (``true`` / ``false``, any case; fire passes
    ``--flag=false`` as that text), else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_flag(name: str, value: Any) -> bool:
    """A yes/no option as a boolean (see :func:`as_bool`); anything else is refused, naming it."""
    flag = as_bool(value)
    if flag is None:
        raise GnerfInputError(f"{name} is a flag: true or false, not {value!r}.")
    return flag


def path_text(name: str, value: Any) -> Any:
    """A path argument as text though a command line (fire: ours, MONAI's bundle runner) read it as
    a number (``2024``); a float is refused, as its text is lost (``1e3`` became ``1000.0``). Other
    values are returned as they are."""
    if isinstance(value, float):
        raise GnerfInputError(f"{name}: the command line read the path you gave as the number {value!r}; "
                              "write it with ./ in front.")  # fmt: skip
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def coerce(value: Any, tp: Any, name: str, error: type[GnerfInputError] = GnerfInputError) -> Any:
    """``value`` as type ``tp`` (e.g. ``PositiveFloat | None``; lossless conversions only) inside its
    ranges, checked as a config field is.

    Args:
        value: the value (a config field's, or from JSON or a file's metadata).
        tp: its type, with any :class:`Range` attached by ``Annotated``.
        name: what the error line calls it.
        error: the exception class raised.

    Raises:
        error: one line naming ``name``, the value and what is allowed.
    """
    inner, ranges = _ranges(tp)
    if ranges:
        try:
            checked = coerce(value, inner, name, error)
        except GnerfInputError:
            raise error(f"{name} must be {_describe(tp)}, got {value!r}.") from None
        if all(r.contains(checked) for r in ranges):
            return checked
        raise error(f"{name} must be {_describe(tp)}, got {value!r}.")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, name, error)
            except GnerfInputError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple:
        items = (args[:1] * len(value) if args[-1] is Ellipsis else args) if isinstance(value, (list, tuple)) else None
        if items is not None and len(items) == len(value):
            return tuple(coerce(v, t, name, error) for v, t in zip(value, items))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, error)
    elif tp is bool:
        flag = as_bool(value)
        if flag is not None:
            return flag
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any or isinstance(value, tp):
        return value
    raise error(f"{name} must be {_describe(tp)}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ConfigLeaf:
    """One leaf field of a (nested) config class.

    Attributes:
        path: field names from the outer config down to the leaf.
        type: the leaf's type annotation.
        default: its default value.
        doc: its help text.
    """

    path: tuple[str, ...]
    type: Any
    default: Any
    doc: str

    @property
    def name(self) -> str:
        """The leaf's own field name (the CLI option)."""
        return self.path[-1]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_leaves(cls: type, prefix: tuple[str, ...] = (), defaults: Any = None) -> list[ConfigLeaf]:
    """The leaf fields of a config class, nested configs flattened, outer fields first.

    A nested config's defaults are those of the outer config's default instance (so an outer
    config may change an inner default once, in its own ``default_factory``).

    Raises:
        ValueError: two leaves share a name (the flat option names must be unique).
    """
    docs = field_docs(cls.__doc__ or "")
    hints = _hints(cls)
    leaves: list[ConfigLeaf] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += config_leaves(hints[f.name], prefix + (f.name,), default)
        else:
            leaves.append(ConfigLeaf(prefix + (f.name,), hints[f.name], default, docs.get(f.name, "")))
    names = [leaf.name for leaf in leaves]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated and not prefix:
        raise ValueError(f"{cls.__name__} has leaf fields of the same name {repeated}: flat options must be unique.")
    return leaves


def nest(leaves: list[ConfigLeaf], values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested config data from flat leaf values ``{leaf name: value}``."""
    data: dict[str, Any] = {}
    by_name = {leaf.name: leaf for leaf in leaves}
    for name, value in values.items():
        node = data
        *outer, last = by_name[name].path
        for key in outer:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def field_docs(docstring: str) -> dict[str, str]:
    """Argument descriptions of a Google-style docstring: ``{name: one-line text}``.

    Reads the ``Args:``, ``Attributes:`` (and ``Arguments:``, ``Parameters:``) sections; an
    entry's continuation lines (indented deeper) are joined to it.
    """
    docs: dict[str, str] = {}
    in_section, entry_indent, current = False, None, None
    for line in docstring.expandtabs().splitlines():
        if _SECTION.match(line):
            in_section, entry_indent, current = True, None, None
            continue
        if not in_section:
            continue
        if not line.strip():
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        match = _ENTRY.match(line)
        if match and (entry_indent is None or indent == entry_indent):
            entry_indent, current = indent, match.group(2)
            docs[current] = match.group(3).strip()
        elif current is not None and entry_indent is not None and indent > entry_indent:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
        else:
            in_section, current = False, None
    return docs
