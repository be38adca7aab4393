"""The one params loader: ``params.yaml`` sections into typed, validated dataclasses.

Each concern declares the params it reads as a frozen dataclass (types from annotations,
defaults for optional keys, range checks in ``__post_init__`` via :func:`require`). Loading
rejects an unknown key, a missing key, a value of the wrong type or out of range, with one
sentence naming the full key (``ingest.synthetic.count``) and the file.

Sections are groups of ``params.yaml``; top-level scalars (``lr``, ``epochs``, ...) are the
knobs experiments sweep with ``dvc exp run -S lr=0.01`` and load with ``section=None``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from lifecycle import paths
from lifecycle.errors import UserError

T = TypeVar("T")


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def require(condition: bool, field: str, message: str) -> None:
    """In a schema's ``__post_init__``: fail with ``message`` about ``field`` unless ``condition``."""
    if not condition:
        raise _FieldError(field, message)


def read_params_file(path: Path | None = None) -> dict[str, Any]:
    path = Path(path or paths.PARAMS)
    if not path.is_file():
        raise UserError(f"{paths.relative(path)} does not exist; the pipeline reads every knob from it.")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{paths.relative(path)} is not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(loaded, dict):
        raise UserError(f"{paths.relative(path)} must be a mapping of keys to values.")
    return loaded


def load_params(section: str | None, schema: type[T], path: Path | None = None) -> T:
    """Load ``params.yaml`` section ``section`` (None: the top-level scalars) as ``schema``."""
    document = read_params_file(path)
    where = paths.relative(Path(path or paths.PARAMS))
    if section is None:
        names = {field.name for field in dataclasses.fields(schema)}
        values = {key: value for key, value in document.items() if key in names}
        return _build(schema, values, prefix="", where=where, ignore_unknown=True)
    if section not in document:
        raise UserError(f"{where} has no '{section}' section.")
    return _build(schema, document[section], prefix=f"{section}.", where=where)


def from_mapping(schema: type[T], values: Any, prefix: str = "") -> T:
    """Validate an in-memory mapping as ``schema`` (tests and library callers)."""
    return _build(schema, values, prefix=prefix, where="params")


def _build(schema: type[T], values: Any, prefix: str, where: str, ignore_unknown: bool = False) -> T:
    key = prefix.rstrip(".") or "params"
    if not isinstance(values, dict):
        raise UserError(f"{where}: '{key}' must be a mapping, got {_describe(values)}.")
    fields = {field.name: field for field in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown and not ignore_unknown:
        raise UserError(
            f"{where}: unknown key '{prefix}{unknown[0]}'; known keys are: {', '.join(sorted(fields))}."
        )
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name, field in fields.items():
        if name not in values:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise UserError(f"{where}: missing key '{prefix}{name}'.")
            continue
        kwargs[name] = _coerce(hints[name], values[name], f"{prefix}{name}", where)
    try:
        return schema(**kwargs)
    except _FieldError as error:
        raise UserError(f"{where}: '{prefix}{error.field}' {error.message}.") from None


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _coerce(hint: Any, value: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key, where)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(arg) for arg in args)
            raise UserError(f"{where}: '{key}' must be one of {choices}, got {_describe(value)}.")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where}: '{key}' must be a list, got {_describe(value)}.")
        return [_coerce(args[0], item, f"{key}[{i}]", where) for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{where}: '{key}' must be a list, got {_describe(value)}.")
        item_hint = args[0]
        return tuple(_coerce(item_hint, item, f"{key}[{i}]", where) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: '{key}' must be a mapping, got {_describe(value)}.")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.", where=where)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: '{key}' must be true or false, got {_describe(value)}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: '{key}' must be an integer, got {_describe(value)}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: '{key}' must be a number, got {_describe(value)}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: '{key}' must be a string, got {_describe(value)}.")
        return value
    if hint is Any:
        return value
    raise TypeError(f"params schema type {hint!r} for '{key}' is not supported")


@dataclasses.dataclass(frozen=True)
class GlobalParams:
    """Top-level knobs that several stages read."""

    seed: int = 42  # every random draw in the pipeline derives from it

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed}")
