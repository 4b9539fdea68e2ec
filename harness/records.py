"""Frozen dataclasses as JSON records: dump, load with checks, and their JSON Schema.

The stage outputs (build manifests) are frozen dataclasses made of ``str``, ``int``,
``float``, ``bool``, ``None``, string enums, tuples, string-keyed dicts and other such
dataclasses. :func:`dump` turns one into JSON data with the fields in declaration
order, :func:`load` checks JSON data field by field on the way back (a wrong type is
one sentence naming the field, never a traceback), and :func:`schema` derives the JSON
Schema the tests validate real files against and ``docs/`` publish.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from harness.errors import InputError

R = TypeVar("R")
Json = Any


def dump(record: object) -> Json:
    """JSON data of a record (dataclass), recursively."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: dump(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, tuple | list):
        return [dump(v) for v in record]
    if isinstance(record, Mapping):
        return {str(k): dump(v) for k, v in record.items()}
    return record


def load(kind: type[R], data: Json, where: str) -> R:
    """The *kind* record of JSON *data*; *where* names the document in errors.

    Raises:
        InputError: a missing or unknown field, or a value of the wrong type.
    """
    value: R = _load(kind, data, where)
    return value


def _hints(kind: type) -> dict[str, Any]:
    return get_type_hints(kind)


def _load(kind: Any, data: Json, where: str) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _load(option, data, where)
            except InputError as err:
                errors.append(err.message)
        raise InputError(errors[0] if len(errors) == 1 else f"{where}: {data!r} fits no type.")
    if origin is typing.Literal:
        if data not in get_args(kind):
            raise InputError(f"{where} is {data!r}, not {' or '.join(map(repr, get_args(kind)))}.")
        return data
    if origin is tuple:
        item = get_args(kind)[0]
        if not isinstance(data, list):
            raise InputError(f"{where} must be a list.")
        return tuple(_load(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is dict:
        value_kind = get_args(kind)[1]
        if not isinstance(data, dict):
            raise InputError(f"{where} must be an object.")
        return {str(k): _load(value_kind, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise InputError(f"{where} must be an object.")
        hints = _hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InputError(f"{where} has unknown fields: {', '.join(unknown)}.")
        values = {}
        for name, field in fields.items():
            if name not in data:
                if field.default is dataclasses.MISSING:
                    raise InputError(f"{where} lacks the field {name!r}.")
                continue
            values[name] = _load(hints[name], data[name], f"{where}.{name}")
        return kind(**values)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(data)
        except ValueError as err:
            known = " or ".join(repr(m.value) for m in kind)
            raise InputError(f"{where} is {data!r}, not {known}.") from err
    if kind is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise InputError(f"{where} must be a number.")
    if kind in (str, int, bool):
        if type(data) is kind:
            return data
        raise InputError(f"{where} must be {_TYPE_NAMES[kind]}.")
    if kind is Any:
        return data
    raise TypeError(f"no JSON form for {kind!r}")


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}
_SCHEMA_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema(kind: type, schema_id: str, title: str) -> Json:
    """The JSON Schema (draft 2020-12) of *kind*'s JSON form; nested records become
    ``$defs`` named after their classes."""
    defs: dict[str, Json] = {}
    root = _schema(kind, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "title": title,
        **root,
        **({"$defs": dict(sorted(defs.items()))} if defs else {}),
    }


def _schema(kind: Any, defs: dict[str, Json], top: bool = True) -> Json:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [_schema(o, defs, False) for o in get_args(kind)]
        return {"anyOf": options}
    if origin is typing.Literal:
        (value,) = get_args(kind)
        return {"const": value}
    if origin is tuple:
        return {"type": "array", "items": _schema(get_args(kind)[0], defs, False)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(get_args(kind)[1], defs, False)}
    if kind is type(None):
        return {"type": "null"}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = _hints(kind)
        fields = dataclasses.fields(kind)
        body = {
            "type": "object",
            "properties": {f.name: _schema(hints[f.name], defs, False) for f in fields},
            "required": [f.name for f in fields if f.default is dataclasses.MISSING],
            "additionalProperties": False,
        }
        if (doc := (kind.__doc__ or "").strip()) and not doc.startswith(kind.__name__ + "("):
            body = {"description": " ".join(doc.split("\n\n")[0].split()), **body}
        if top:
            return body
        defs[kind.__name__] = body
        return {"$ref": f"#/$defs/{kind.__name__}"}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"enum": [m.value for m in kind]}
    if kind in _SCHEMA_TYPES:
        return {"type": _SCHEMA_TYPES[kind]}
    if kind is Any:
        return {}
    raise TypeError(f"no JSON Schema for {kind!r}")
