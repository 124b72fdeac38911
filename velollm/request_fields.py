"""Typed reads of JSON request fields: each wrong type or range is an InvalidRequest naming the field.

Beside errors.py rather than in velollm.api: the native routes and the proxy's conversions (which may not import
velollm.api, tests/unit/test_import_rule.py) read the same fields, so one reader words each type and range error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from velollm.errors import InvalidRequest

_MISSING = object()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Fields:
    """Reads fields of one JSON object; `prefix` names nested objects in errors ("options.top_k")."""

    def __init__(self, body: Any, prefix: str = "") -> None:
        if not isinstance(body, Mapping):
            where = prefix.rstrip(".") or "request body"
            raise InvalidRequest(f"{where} must be a JSON object, got {_type_name(body)}", param=prefix.rstrip(".") or None)
        self.body = body
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def bad(self, key: str, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.name(key)} {why}", param=self.name(key))

    def has(self, key: str) -> bool:
        return self.body.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.body.get(key)
        return default if value is None else value

    def str(self, key: str, default: Any = _MISSING) -> Any:
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "a string")
        if not isinstance(value, str):
            raise self.bad(key, f"must be a string, got {_type_name(value)}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "a boolean")
        if not isinstance(value, bool):
            raise self.bad(key, f"must be a boolean, got {_type_name(value)}")
        return value

    def int(self, key: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None,
            truncate: bool = False) -> Any:
        """An integer; with `truncate`, any JSON number is accepted and truncated (Ollama's options)."""
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "an integer")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, f"must be an integer, got {_type_name(value)}")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.bad(key, f"must be a finite number, got {value}")
            if not truncate and not value.is_integer():
                raise self.bad(key, f"must be an integer, got {value}")
            value = int(value)
        return self._range(key, value, lo, hi)

    def float(self, key: str, default: Any = _MISSING, *, lo: float | None = None, hi: float | None = None) -> Any:
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, f"must be a number, got {_type_name(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int past the float range
            raise self.bad(key, "must be a finite number, got an integer beyond the float range") from None
        if not math.isfinite(number):
            raise self.bad(key, f"must be a finite number, got {number}")
        return self._range(key, number, lo, hi)

    def int_list(self, key: str, default: Any = _MISSING) -> Any:
        """An array of integers (token ids and the like): each item an integer, as `int` reads one."""
        items = self.list(key, default)
        if items is default:
            return default
        out = []
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or \
                    (isinstance(item, float) and not (math.isfinite(item) and item.is_integer())):
                raise self.bad(key, f"must be an array of integers; item {i} is {_type_name(item)} {item!r:.40}")
            out.append(int(item))
        return out

    def list(self, key: str, default: Any = _MISSING) -> Any:
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "an array")
        if not isinstance(value, list):
            raise self.bad(key, f"must be an array, got {_type_name(value)}")
        return value

    def dict(self, key: str, default: Any = _MISSING) -> Any:
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "an object")
        if not isinstance(value, Mapping):
            raise self.bad(key, f"must be an object, got {_type_name(value)}")
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        """A string or an array of strings, returned as a list."""
        value = self.body.get(key)
        if value is None:
            return self._default(key, default, "a string or an array of strings")
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(key, "must be a string or an array of strings")
        return list(value)

    def _default(self, key: str, default: Any, what: str) -> Any:
        if default is _MISSING:
            raise InvalidRequest(f"{self.name(key)} is required and must be {what}", param=self.name(key))
        return default

    def _range(self, key: str, value: Any, lo: Any, hi: Any) -> Any:
        if lo is not None and value < lo:
            raise self.bad(key, f"must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise self.bad(key, f"must be at most {hi}, got {value}")
        return value
