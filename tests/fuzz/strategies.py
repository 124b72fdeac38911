"""Hypothesis strategies for the request bodies of every POST route, both APIs.

Each field is drawn from its plausible values most of the time and from `hostile()` otherwise: wrong
types, NaN and infinities, numbers past every range (integers past float64's too), lone surrogates, nesting far
past MAX_JSON_DEPTH.
Plausible values keep generation cheap (a few tokens), so a run spends its time on the edges.
Bodies are sent as bytes by `encode`, which writes what json.dumps cannot: NaN/Infinity literals and
nesting thousands of levels deep (`Deep`), as a careless or hostile client would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

MODEL = "demo"
EMBEDDER = "minilm"  # tests/fuzz/conftest.py serves all-MiniLM-L6-v2 under this name
ROLES = ["user", "user", "user", "system", "assistant", "tool", "developer", "function", "wizard"]


@dataclass(frozen=True)
class Deep:
    """`levels` nested arrays or objects, spliced into the encoded body as raw text."""

    levels: int
    kind: str = "["

    def text(self) -> str:
        if self.kind == "[":
            return "[" * self.levels + "]" * self.levels
        return '{"a":' * self.levels + "1" + "}" * self.levels


def encode(body: Any) -> bytes:
    """The body as a client would put it on the wire; NaN/Infinity as JS writes them, Deep spliced in."""
    deep: dict[str, Deep] = {}

    def default(value: Any) -> Any:
        if isinstance(value, Deep):
            token = f"__deep_{uuid.uuid4().hex}__"
            deep[token] = value
            return token
        raise TypeError(type(value).__name__)

    text = json.dumps(body, default=default, allow_nan=True)
    for token, value in deep.items():
        text = text.replace(f'"{token}"', value.text())
    return text.encode("utf-8", "surrogatepass")


def _deep() -> st.SearchStrategy[Deep]:
    return st.builds(Deep, st.sampled_from([63, 65, 300, 1000, 5000, 100_000]), st.sampled_from(["[", "{"]))


_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 1e-320, 2.0**64]),
    st.integers(), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, 10**400, -(10**400), -100000, -1]),
)
_texts = st.one_of(st.text(max_size=12), st.sampled_from(["\ud800", "a\udfffb", "", " ", "{{", "\x00"]))


def hostile() -> st.SearchStrategy[Any]:
    """A value no field expects (or one just past its range)."""
    scalars = st.one_of(st.none(), st.booleans(), _numbers, _texts)
    return st.one_of(scalars, _deep(), st.lists(scalars, max_size=3),
                     st.dictionaries(st.text(max_size=4), scalars, max_size=3))


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `good`, sometimes hostile (for values nested inside a field: list items, message fields)."""
    return st.one_of(good, good, good, hostile())


@st.composite
def body(draw: st.DrawFn, required: dict[str, st.SearchStrategy[Any]],
         optional: dict[str, st.SearchStrategy[Any]]) -> Any:
    """A request body: one in ten no JSON object at all; otherwise the `required` fields and some of the
    `optional` ones, plausible, with one field (or an unknown key) hostile in four of ten."""
    mode = draw(st.integers(0, 9))
    if mode == 0:
        return draw(hostile())
    out = {k: draw(v) for k, v in required.items()}
    for k in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6)):
        out[k] = draw(optional[k])
    if mode <= 4:
        out[draw(st.sampled_from([*sorted({*required, *optional}), "unknown_field"]))] = draw(hostile())
    return out


# --- plausible values ---------------------------------------------------------------------------

_prompt = st.text(max_size=30)
_small_tokens = st.integers(min_value=1, max_value=4)
_token_ids = st.lists(st.integers(min_value=0, max_value=300), max_size=4)
_stop = st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=2))
_schema = st.sampled_from([{"type": "object"}, {"type": "object", "properties": {"a": {"type": "integer"}}},
                           {"type": "array", "items": {"type": "string"}}, {"type": "nonsense"}])
_tool = st.builds(lambda name, params: {"type": "function", "function": {"name": name, "parameters": params}},
                  st.sampled_from(["get_weather", "f", ""]), _schema)
_tools = st.lists(_tool, max_size=2)


def _message(content: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": content}),
                     st.fixed_dictionaries({"role": field(st.sampled_from(ROLES)), "content": field(content)}))


_openai_content = st.one_of(_prompt, _prompt, st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "text", "image_url"]), "text": _prompt}), min_size=1, max_size=2))
# The deprecated function calling's history: an assistant's function_call, then a "function" result.
_function_call = st.fixed_dictionaries({"name": field(st.sampled_from(["get_weather", "f", ""])),
                                        "arguments": field(st.sampled_from(['{"city": "Paris"}', "{}", "{", ""]))})
_legacy_call = st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none(),
                                      "function_call": field(_function_call)})
_openai_messages = st.lists(st.one_of(_message(_openai_content), _message(_openai_content), _legacy_call),
                            min_size=1, max_size=3)
_ollama_messages = st.lists(_message(_prompt), min_size=1, max_size=3)

_sampling = {
    "temperature": st.floats(min_value=0, max_value=2), "top_p": st.floats(min_value=0.01, max_value=1),
    "top_k": st.integers(min_value=-1, max_value=50), "min_p": st.floats(min_value=0, max_value=1),
    "presence_penalty": st.floats(min_value=-2, max_value=2), "frequency_penalty": st.floats(min_value=-2, max_value=2),
    "repetition_penalty": st.floats(min_value=0.5, max_value=2), "seed": st.integers(min_value=0, max_value=2**64 - 1),
    "n": st.integers(min_value=1, max_value=2), "max_tokens": _small_tokens, "min_tokens": st.integers(0, 2),
    "stop": _stop, "stop_token_ids": _token_ids, "ignore_eos": st.booleans(),
    "logit_bias": st.dictionaries(st.integers(0, 300).map(str), st.floats(-100, 100), max_size=2),
    "stream": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}

OPENAI_CHAT = body({"model": st.just(MODEL), "messages": _openai_messages}, {
    **_sampling, "logprobs": st.booleans(), "top_logprobs": st.integers(0, 3), "tools": _tools,
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "functions": st.lists(field(_tool.map(lambda t: t["function"])), max_size=2),
    "function_call": st.one_of(st.sampled_from(["auto", "none", "required"]),
                               st.fixed_dictionaries({"name": st.sampled_from(["get_weather", "f", ""])})),
    "response_format": st.one_of(st.just({"type": "json_object"}), _schema.map(
        lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}})),
    "reasoning_effort": st.sampled_from(["low", "high", "none"]), "context_overflow": st.sampled_from(
        ["error", "truncate", "compress"]), "max_completion_tokens": _small_tokens,
})

OPENAI_COMPLETIONS = body({"model": st.just(MODEL), "prompt": st.one_of(
    _prompt, st.lists(_prompt, min_size=1, max_size=3), _token_ids.filter(bool),
    st.lists(_token_ids.filter(bool), min_size=1, max_size=2))}, {
    **_sampling, "echo": st.booleans(), "logprobs": st.integers(0, 3), "suffix": _prompt, "best_of": st.integers(1, 2),
})

OPENAI_RESPONSES = body({"model": st.just(MODEL), "input": st.one_of(_prompt, _openai_messages)}, {
    "instructions": _prompt, "max_output_tokens": _small_tokens, "temperature": _sampling["temperature"],
    "top_p": _sampling["top_p"], "stream": st.booleans(), "store": st.booleans(), "tools": _tools,
    "previous_response_id": st.sampled_from(["resp_missing", ""]), "background": st.booleans(),
})

_embedding_model = st.sampled_from([EMBEDDER, EMBEDDER, EMBEDDER, MODEL])
OPENAI_EMBEDDINGS = body({"model": _embedding_model, "input": st.one_of(_prompt, st.lists(_prompt, max_size=2))},
                         {"encoding_format": st.sampled_from(["float", "base64", "int8"]),
                          "dimensions": st.integers(0, 64)})

_options = st.fixed_dictionaries({}, optional={
    "temperature": _sampling["temperature"], "top_p": _sampling["top_p"], "top_k": _sampling["top_k"],
    "seed": st.integers(min_value=-1, max_value=2**63 - 1), "num_predict": _small_tokens, "num_ctx": st.integers(1, 512),
    "repeat_penalty": _sampling["repetition_penalty"], "repeat_last_n": st.integers(-1, 64), "stop": _stop,
    "presence_penalty": _sampling["presence_penalty"], "frequency_penalty": _sampling["frequency_penalty"],
    "min_p": _sampling["min_p"], "mirostat": st.integers(0, 2), "context_overflow": st.sampled_from(["error", "truncate"]),
}).map(lambda o: {**o, "num_predict": o.get("num_predict", 3)})  # never fill the context: keep runs short

_ollama_common = {
    "stream": st.booleans(), "options": st.one_of(_options, st.dictionaries(st.sampled_from(
        ["temperature", "seed", "num_predict", "top_k", "num_ctx"]), hostile(), max_size=2)),
    "format": st.one_of(st.just("json"), _schema), "keep_alive": st.sampled_from(["5m", 300, -1, "1h", "10s"]),
    "think": st.booleans(), "logprobs": st.booleans(), "top_logprobs": st.integers(0, 3),
}
_templates = st.sampled_from(["{{ .System }} {{ .Prompt }}", "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}",
                              "{{ if .System }", "{{ .Prompt }", "{{ range .Messages }}{{ end }}", "{{ end }}",
                              "{{- .Prompt -}}{{ .Response }}"])

OLLAMA_GENERATE = body({"model": st.just(MODEL), "prompt": _prompt}, {
    **_ollama_common, "system": _prompt, "template": _templates, "raw": st.booleans(), "context": _token_ids,
    "suffix": _prompt, "images": st.lists(st.just("aGk="), max_size=1),
})

OLLAMA_CHAT = body({"model": st.just(MODEL), "messages": _ollama_messages}, {
    **_ollama_common, "tools": _tools, "truncate": st.booleans(),
})

OLLAMA_SHOW = body({"model": st.sampled_from([MODEL, EMBEDDER, "nope", "/etc/passwd", "x" * 300])}, {"verbose": st.booleans()})
OLLAMA_EMBED = body({"model": _embedding_model, "input": st.one_of(_prompt, st.lists(_prompt, max_size=2))},
                    {"truncate": st.booleans(), "options": _options, "dimensions": st.integers(0, 64)})
OLLAMA_EMBEDDINGS = body({"model": _embedding_model, "prompt": _prompt}, {"options": _options})
OLLAMA_PULL = body({"model": st.sampled_from([MODEL, "nope:latest", ""])}, {"stream": st.booleans(),
                                                                            "insecure": st.booleans()})

# route -> body strategy: every POST route of both APIs
ROUTES: dict[str, st.SearchStrategy[Any]] = {
    "/v1/chat/completions": OPENAI_CHAT, "/v1/completions": OPENAI_COMPLETIONS, "/v1/responses": OPENAI_RESPONSES,
    "/v1/embeddings": OPENAI_EMBEDDINGS, "/api/generate": OLLAMA_GENERATE, "/api/chat": OLLAMA_CHAT,
    "/api/show": OLLAMA_SHOW, "/api/embed": OLLAMA_EMBED, "/api/embeddings": OLLAMA_EMBEDDINGS,
    "/api/pull": OLLAMA_PULL, "/v1/responses/input_tokens": OPENAI_RESPONSES,  # a count takes a create's body
    "/v1/responses/compact": OPENAI_RESPONSES,  # as does a compaction (what it does not read is let by)
}

# Bodies that are no JSON object, or no JSON at all: what a broken client or a probe sends.
RAW_BODIES = st.one_of(
    st.binary(max_size=40), st.sampled_from([b"", b"{", b"NaN", b"[]", b"\xff\xfe", b'{"model": "demo"',
                                             b'{"model": "\\ud800"}', b"1" * 5000, b'{"a": ' + b"1" * 5000 + b"}"]),
    _deep().map(lambda d: d.text().encode()),
)
