"""OpenAI's `metadata` and `user` request fields, checked as OpenAI checks them (chat and Responses).

`metadata`: at most 16 key-value pairs, keys up to 64 characters, values strings up to 512 characters
(what a stored chat completion or response carries, and what listings filter by). `user`: a string.
Each fault is a 400 in OpenAI's terms: its message, `param` and `code`.
"""

from __future__ import annotations

from typing import Any

from velollm.wire.errors import APIError

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array",
               dict: "an object", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _invalid_type(param: str, expected: str, value: Any) -> APIError:
    return APIError(400, f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
                    param=param, code="invalid_type")


def _too_long(param: str, limit: int, value: str) -> APIError:
    return APIError(400, f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
                         f"but got a string with length {len(value)} instead.", param=param,
                    code="string_above_max_length")


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """The metadata object (None: empty); an APIError 400 naming the offending key otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    if len(value) > MAX_METADATA_KEYS:
        raise APIError(400, f"Invalid '{param}': too many properties. Expected an object with at most "
                            f"{MAX_METADATA_KEYS} properties, but got an object with {len(value)} properties "
                            "instead.", param=param, code="object_above_max_properties")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise APIError(400, f"Invalid '{param}': key too long. Expected keys with maximum length "
                                f"{MAX_METADATA_KEY_CHARS}, but got a key with length {len(key)} instead "
                                f"({key[:16]!r}...).", param=param, code="invalid_metadata_key")
        if not isinstance(item, str):
            raise _invalid_type(f"{param}.{key}", "a string", item)
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise _too_long(f"{param}.{key}", MAX_METADATA_VALUE_CHARS, item)
    return dict(value)


def check_user(value: Any, param: str = "user") -> str | None:
    """`user` (an end-user id): a string, or absent."""
    if value is not None and not isinstance(value, str):
        raise _invalid_type(param, "a string", value)
    return value
