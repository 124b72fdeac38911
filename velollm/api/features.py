"""What the server can honour; requests for anything else get a clear 400, never silent ignoring."""

from __future__ import annotations

from typing import Any

from velollm.errors import InvalidRequest

# StructuredOutput kinds the API passes to the engine (structural_tag: the tool-call grammars).
STRUCTURED_OUTPUT_KINDS = frozenset({"json_object", "json_schema", "structural_tag"})
# OpenAI tool_choice strings accepted (a named function, {"type": "function", ...}, is accepted too).
TOOL_CHOICES = frozenset({"none", "auto", "required"})
# Largest n (choices per request) and number of prompts in one /v1/completions request.
MAX_N = 128
MAX_PROMPTS = 1024


def check_schema(schema: Any, param: str) -> None:
    """A 400 naming `param` unless `schema` is a JSON Schema object (before any grammar is compiled)."""
    import jsonschema  # lazily: not needed by `from velollm import LLM`

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{param} is not a valid JSON Schema: {exc.message}", param=param) from exc
