"""Typed JSON records: frozen dataclasses in and out of JSON, each field checked.

Two ways in, one rule: a file that breaks its format is refused with one sentence
naming the file, the field and what was wrong, never a traceback.

* Generic: :func:`dump` turns a frozen dataclass of ``str``, ``int``, ``float``,
  ``bool``, ``None``, string enums, tuples, string-keyed dicts and other such
  dataclasses into JSON data (fields in declaration order); :func:`load` reads it back
  from the type hints; :func:`schema` derives its JSON Schema. The build manifests use
  these.
* By hand: :class:`Fields` reads one JSON object field by field, for records whose
  JSON form is not their dataclass's (``image.json``, boot results, check lines,
  ``results.json``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
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


# -- field by field ---------------------------------------------------------------

E = TypeVar("E", bound=enum.Enum)
_MISSING: Any = object()


def load_json(path: Path, hint: str | None = None) -> object:
    """The JSON document in *path*.

    Raises:
        InputError: the file is missing or does not hold JSON (*hint* says what to do).
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path} does not exist.", hint=hint) from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} does not hold JSON: {err}", hint=hint) from err


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Fields:
    """The fields of one JSON object, read by type.

    Args:
        data: the decoded JSON value that should be an object.
        where: names it in error messages, e.g. ``results.json: cases[3]``.

    Raises:
        InputError: from every reader, for a missing field or a value of the wrong kind.
    """

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, found {_kind(data)}.")
        self.data: dict[str, Any] = data
        self.where = where

    def _get(self, key: str, kinds: tuple[type, ...], what: str, default: object) -> Any:
        if key not in self.data:
            if default is not _MISSING:
                return default
            raise InputError(f"{self.where}: {key!r} is missing.")
        value = self.data[key]
        # bool is an int to Python, never to JSON.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InputError(f"{self.where}: {key!r} must be {what}, not {value!r}.")
        return value

    def text(self, key: str, default: str = _MISSING) -> str:
        value: str = self._get(key, (str,), "a string", default)
        return value

    def optional_text(self, key: str) -> str | None:
        value: str | None = self._get(key, (str, type(None)), "a string or null", None)
        return value

    def integer(self, key: str, default: int = _MISSING) -> int:
        value: int = self._get(key, (int,), "an integer", default)
        return value

    def optional_integer(self, key: str) -> int | None:
        value: int | None = self._get(key, (int, type(None)), "an integer or null", None)
        return value

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number", _MISSING))

    def boolean(self, key: str) -> bool:
        value: bool = self._get(key, (bool,), "true or false", _MISSING)
        return value

    def choice(
        self, key: str, kind: type[E], allowed: Collection[E] | None = None, default: E = _MISSING
    ) -> E:
        """The member of enum *kind* (only one of *allowed*, if given) the field names."""
        if key not in self.data and default is not _MISSING:
            return default
        text = self.text(key)
        members = list(allowed if allowed is not None else kind)
        for member in members:
            if member.value == text:
                return member
        words = ", ".join(str(m.value) for m in members)
        raise InputError(f"{self.where}: {key!r} is {text!r}, not one of {words}.")

    def texts(self, key: str, default: tuple[str, ...] = _MISSING) -> tuple[str, ...]:
        items: list[Any] = self._get(key, (list,), "a list of strings", default)
        if not all(isinstance(item, str) for item in items):
            raise InputError(f"{self.where}: {key!r} must be a list of strings.")
        return tuple(items)

    def record(self, key: str) -> Fields:
        return Fields(self._get(key, (dict,), "an object", _MISSING), f"{self.where}: {key}")

    def optional_record(self, key: str) -> Fields | None:
        value = self._get(key, (dict, type(None)), "an object or null", None)
        return None if value is None else Fields(value, f"{self.where}: {key}")

    def records(self, key: str) -> list[Fields]:
        items: list[Any] = self._get(key, (list,), "a list of objects", _MISSING)
        return [Fields(item, f"{self.where}: {key}[{i}]") for i, item in enumerate(items)]

    def record_map(self, key: str) -> dict[str, Fields]:
        items: dict[str, Any] = self._get(key, (dict,), "an object", _MISSING)
        return {name: Fields(item, f"{self.where}: {key}.{name}") for name, item in items.items()}

    def text_map(self, key: str) -> dict[str, str]:
        items: dict[str, Any] = self._get(key, (dict,), "an object of strings", {})
        if not all(isinstance(v, str) for v in items.values()):
            raise InputError(f"{self.where}: {key!r} must map names to strings.")
        return dict(items)

    def number_map(self, key: str) -> dict[str, float]:
        items: dict[str, Any] = self._get(key, (dict,), "an object of numbers", {})
        numbers = {}
        for name, value in items.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{self.where}: {key}.{name} must be a number, not {value!r}.")
            numbers[name] = float(value)
        return numbers
