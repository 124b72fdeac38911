"""vLLM's request keys for constrained decoding: `structured_outputs` and the older `guided_*` fields.

Clients written for vLLM send them in `extra_body` (`{"structured_outputs": {"choice": ["yes", "no"]}}`,
`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`). Ignoring them would hand back free
text where the client asked for a constrained one, so each becomes the StructuredOutput the engine
compiles (a JSON Schema, a regex, a choice as an EBNF alternation, an EBNF grammar), and what cannot be
honoured is a 400. As in vLLM, one constraint per request.
"""

from __future__ import annotations

import json
from typing import Any

from velollm.api.features import check_schema
from velollm.request_fields import Fields
from velollm.sampling_params import StructuredOutput

# structured_outputs' constraint keys, and the guided_* field that said the same before it
KINDS = ("json", "regex", "choice", "grammar", "json_object")
GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}


def vllm_structured_output(f: Fields) -> tuple[str, StructuredOutput] | None:
    """(the request key that set it, the constraint), or None when the request sets none of vLLM's keys."""
    found = [(key, kind, f.raw(key)) for key, kind in GUIDED.items() if f.raw(key) is not None]
    if f.raw("structured_outputs") is not None:
        so = Fields(f.dict("structured_outputs"), "structured_outputs.")
        if so.raw("structural_tag") is not None:
            raise so.bad("structural_tag", "is not supported; use json, regex, choice or grammar")
        # Its other keys (disable_any_whitespace, whitespace_pattern, ...) tune vLLM's compiler: the engine's apply.
        found += [(f"structured_outputs.{kind}", kind, so.raw(kind)) for kind in KINDS
                  if so.raw(kind) not in (None, False)]
    if not found:
        return None
    if len(found) > 1:
        raise f.bad(found[1][0], f"sets a second constraint beside {found[0][0]}: send one of "
                                 "json, regex, choice or grammar")
    key, kind, value = found[0]
    return key, _constraint(key, kind, value)


def _constraint(key: str, kind: str, value: Any) -> StructuredOutput:
    f = Fields({key: value})
    if kind == "json_object":
        return StructuredOutput("json_object")
    if kind == "json":
        schema = value
        if isinstance(value, str):
            try:
                schema = json.loads(value)
            except ValueError as exc:
                raise f.bad(key, f"is not JSON: {exc}") from None
        check_schema(schema, key)
        from velollm.tools.tool_grammar import normalize_schema

        return StructuredOutput("json_schema", json.dumps(normalize_schema(dict(schema))))
    if kind == "choice":
        choices = f.str_list(key)
        if not choices or not all(choices):
            raise f.bad(key, "must be a non-empty array of non-empty strings")
        return StructuredOutput("ebnf", "root ::= " + " | ".join(_ebnf_literal(c) for c in choices))
    text = f.str(key)
    if not text:
        raise f.bad(key, "must not be empty")
    return StructuredOutput("regex" if kind == "regex" else "ebnf", text)


def _ebnf_literal(text: str) -> str:
    """`text` as an EBNF string literal: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
