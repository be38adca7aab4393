"""The one params loader: ``params.yaml`` validated as a whole against :mod:`lifecycle.core.schema`.

:func:`load_params` reads the file, validates every section (so a bad key anywhere, or a
constraint across sections, stops the stage before it does any work) and returns the typed
document; a stage then reads the sections it declares in dvc.yaml (``params.train``,
``params.lr``). A mistake becomes one :class:`UserError` sentence naming the file and the full
key (``ingest.synthetic.count``), never a pydantic traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.schema import PipelineParams

M = TypeVar("M", bound=BaseModel)

# pydantic error type -> what the value must be
_TYPE_WORDS = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUND_WORDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


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


def load_params(path: Path | None = None) -> PipelineParams:
    """The whole ``params.yaml`` (default: the repository's), validated."""
    path = Path(path or paths.PARAMS)
    return validate(PipelineParams, read_params_file(path), where=paths.relative(path))


def validate(schema: type[M], values: Any, prefix: str = "", where: str = "params") -> M:
    """``values`` as ``schema``, or a UserError naming the first wrong key (``prefix`` + its path)."""
    try:
        return schema.model_validate(values)
    except ValidationError as error:
        raise UserError(describe(error, schema, prefix, where)) from None


def describe(error: ValidationError, schema: type[BaseModel], prefix: str = "", where: str = "params") -> str:
    """The first error of ``error`` as one sentence that names the full key."""
    first = error.errors(include_url=False)[0]
    location = [str(part) for part in first["loc"]]
    kind, value = first["type"], first.get("input")
    message = first["msg"]
    if kind in ("value_error", "assertion_error") and message.startswith("Value error, @"):
        field, _, message = message[len("Value error, @"):].partition("@")
        location += [part for part in field.split(".") if part]
        return f"{where}: '{_key(prefix, location)}' {message}."
    key = _key(prefix, location)
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_model_at(schema, location[:-1]).model_fields))
        return f"{where}: unknown key '{key}'; known keys are: {known}."
    if kind == "missing":
        return f"{where}: missing key '{key}'."
    if kind in _TYPE_WORDS:
        return f"{where}: '{key}' must be {_TYPE_WORDS[kind]}, got {_show(value)}."
    if kind in _BOUND_WORDS:
        bound, words = _BOUND_WORDS[kind]
        return f"{where}: '{key}' must be {words} {first['ctx'][bound]}, got {_show(value)}."
    if kind == "literal_error":
        return f"{where}: '{key}' must be one of {first['ctx']['expected']}, got {_show(value)}."
    return f"{where}: '{key}' {message[:1].lower()}{message[1:]} (got {_show(value)})."


def _key(prefix: str, location: list[str]) -> str:
    text = prefix.rstrip(".")
    for part in location:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "params"


def _model_at(schema: type[BaseModel], location: list[str]) -> type[BaseModel]:
    """The model class that validates the mapping at ``location`` (for listing its keys)."""
    model = schema
    for part in location:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"
