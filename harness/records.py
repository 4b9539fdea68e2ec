"""Reading JSON records into typed objects, one field at a time.

Every typed record the harness writes (``image.json``, a boot result, a check line,
``results.json``) is read back through :class:`Fields`, so a file that breaks its
format is refused with one sentence naming the file, the field and what was wrong,
never a ``KeyError`` traceback. The schemas beside the records say the same in JSON
Schema; the harness itself does not depend on a schema validator.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import InputError

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
