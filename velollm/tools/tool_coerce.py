"""Validation of tool arguments against their JSON Schema, with coercion of the clear cases.

Clear cases only: a value whose meaning is unambiguous under the schema ("3" where an integer is
required, "true" for a boolean, a lone value where an array is required, an array or object sent
as a JSON string, a missing property that has a default, a property the schema forbids). Anything
else is an error reported in words a model can act on.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

_MAX_PASSES = 8
_INT = re.compile(r"^\s*[-+]?\d+(\.0*)?\s*$")
_UNSET = object()


def schema_validator(schema: dict[str, Any]) -> Any:
    """The jsonschema validator (format checks on) for `schema`: build it once per schema and reuse it."""
    import jsonschema  # lazily: not needed by `from velollm import LLM`

    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check_arguments(
    args: dict[str, Any], schema: dict[str, Any], coerce: bool = True, validator: Any = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(arguments, fixes applied, errors left). Errors empty means the arguments validate.

    validator: `schema_validator(schema)`, when the caller keeps one (built here otherwise)."""
    if validator is None:
        validator = schema_validator(schema)
    args = copy.deepcopy(args)
    fixes: list[str] = []
    for _ in range(_MAX_PASSES):
        errors = sorted(validator.iter_errors(args), key=lambda e: len(e.absolute_path))
        if not errors:
            return args, fixes, []
        if not coerce:
            break
        progress = False
        for error in errors:
            fix = _fix(args, error)
            if fix:
                fixes.append(fix)
                progress = True
                break  # paths may have moved: validate again
        if not progress:
            break
    return args, fixes, [_describe(e) for e in _leaf_errors(validator.iter_errors(args))]


def _leaf_errors(errors: Any) -> list[Any]:
    out = []
    for error in errors:
        # anyOf/oneOf failures explain themselves best through their closest sub-error.
        out.append(min(error.context, key=lambda e: len(e.absolute_path)) if error.context else error)
    return out


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path)


def _describe(error: Any) -> str:
    where = _where(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        prefix = f"{where}." if where else ""
        return f"missing required argument '{prefix}{missing}'"
    return f"argument '{where}': {error.message}" if where else error.message


def _get(root: Any, path: list[Any]) -> Any:
    for p in path:
        root = root[p]
    return root


def _set(root: Any, path: list[Any], value: Any) -> None:
    _get(root, path[:-1])[path[-1]] = value


def _fix(args: dict[str, Any], error: Any) -> str:
    path = list(error.absolute_path)
    schema = error.schema
    if error.validator == "type" and path:
        value = _get(args, path)
        new = coerce_value(value, error.validator_value, schema)
        if new is not _UNSET:
            _set(args, path, new)
            return f"argument '{_where(path)}': {json.dumps(value)} -> {json.dumps(new)}"
    if error.validator == "enum" and path:
        value = _get(args, path)
        matches = [
            v
            for v in error.validator_value
            if isinstance(v, str) and isinstance(value, str) and v.lower() == value.strip().lower()
        ]
        if len(matches) == 1:
            _set(args, path, matches[0])
            return f"argument '{_where(path)}': {value!r} -> {matches[0]!r}"
    if error.validator == "required":
        target = _get(args, path)
        props = schema.get("properties", {})
        for name in error.validator_value:
            if name not in target and isinstance(props.get(name), dict) and "default" in props[name]:
                target[name] = copy.deepcopy(props[name]["default"])
                return f"filled '{_where([*path, name])}' with its default"
    if error.validator == "additionalProperties" and error.validator_value is False:
        target = _get(args, path)
        allowed = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        extra = [k for k in target if k not in allowed and not any(p.search(k) for p in patterns)]
        for key in extra:
            del target[key]
        if extra:
            return f"dropped unknown argument(s) {', '.join(map(repr, extra))}"
    return ""


def coerce_value(value: Any, expected: str | list[str], schema: dict[str, Any]) -> Any:
    """`value` converted to one of the `expected` JSON types when the conversion is unambiguous."""
    kinds = [expected] if isinstance(expected, str) else list(expected)
    for kind in kinds:
        new = _coerce_one(value, kind, schema)
        if new is not _UNSET:
            return new
    return _UNSET


def _coerce_one(value: Any, kind: str, schema: dict[str, Any]) -> Any:
    if kind == "integer":
        if isinstance(value, str) and _INT.match(value):
            try:  # exact: int(float(value)) of 400 digits was int(inf), an OverflowError
                return int(value.strip().split(".", 1)[0])
            except ValueError:  # past Python's digit limit for int(str): left as the error it is
                return _UNSET
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "number":
        if isinstance(value, str) and not isinstance(value, bool):
            try:
                number = float(value.strip())
            except ValueError:
                return _UNSET
            if math.isfinite(number):
                return int(number) if _INT.match(value) else number
    elif kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
    elif kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return json.dumps(value)
    elif kind == "null":
        if isinstance(value, str) and value.strip().lower() in ("null", "none"):
            return None
    elif kind == "array":
        parsed = _parse_json_string(value)
        if isinstance(parsed, list):
            return parsed
        if value is not None:
            return [value]
    elif kind == "object":
        parsed = _parse_json_string(value)
        if isinstance(parsed, dict):
            return parsed
    return _UNSET


def _parse_json_string(value: Any) -> Any:
    if not isinstance(value, str) or value.strip()[:1] not in ("[", "{"):
        return _UNSET
    try:
        return json.loads(value)
    except ValueError:
        return _UNSET
