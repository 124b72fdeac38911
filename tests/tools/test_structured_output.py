"""Grammar backend: random tokens under the mask always give parseable, schema-valid, short JSON."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
import torch

from tests.tools.corpus import TOOLS
from tests.tools.schemas import ALL
from velollm.engine.text.schema_bounds import GrammarLimits, bound_regex, bound_schema, bound_tag_schemas
from velollm.engine.text.structured_output import StructuredOutputManager
from velollm.engine.text.tokenizer import Tokenizer
from velollm.errors import InvalidRequest
from velollm.sampling_params import StructuredOutput
from velollm.tools.tool_grammar import (
    ollama_format_constraint,
    response_format_constraint,
    tool_call_constraint,
)
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_repair import ToolRepairer

MAX_TOKENS = 256
PAD = 13  # the model's lm_head is larger than the vocabulary (padded rows must never be sampled)


@pytest.fixture(scope="module")
def manager(byte_bpe: Tokenizer) -> StructuredOutputManager:
    return StructuredOutputManager(byte_bpe, byte_bpe.vocab_size + PAD, max_threads=2)


def _sample_batch(
    manager: StructuredOutputManager, tok: Tokenizer, specs: list[StructuredOutput | None], seed: int
) -> list[tuple[list[int], bool]]:
    """Random logits, masked; argmax per row. Returns (token ids, ended with EOS) per row."""
    gen = torch.Generator().manual_seed(seed)
    matchers = [manager.new_matcher(s, max_tokens=MAX_TOKENS) if s is not None else None for s in specs]
    outs: list[list[int]] = [[] for _ in specs]
    done = [m is None for m in matchers]
    for _ in range(MAX_TOKENS):
        if all(done):
            break
        logits = torch.rand(len(specs), manager.vocab_size, generator=gen)
        manager.apply_masks(logits, [None if d else m for m, d in zip(matchers, done)])
        for row, m in enumerate(matchers):
            if done[row] or m is None:
                continue
            token = int(torch.argmax(logits[row]))
            assert token < tok.vocab_size, "a padded lm_head row was allowed"
            assert m.accept_token(token)
            if token in tok.eos_token_ids:
                done[row] = True
                assert m.is_terminated()
            else:
                outs[row].append(token)
    return [(ids, d) for ids, d in zip(outs, done)]


def _check(schema: dict, text: str) -> None:
    value = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(value)


def test_at_least_100_schemas() -> None:
    assert len(ALL) >= 100


@pytest.mark.parametrize("start", range(0, len(ALL), 8))
def test_random_tokens_under_schema_mask_give_valid_json(
    manager: StructuredOutputManager, byte_bpe: Tokenizer, start: int
) -> None:
    schemas = ALL[start : start + 8]
    specs: list[StructuredOutput | None] = [StructuredOutput("json_schema", json.dumps(s)) for s in schemas]
    specs.insert(1, None)  # an unconstrained request in the same batch stays unmasked
    results = _sample_batch(manager, byte_bpe, specs, seed=start)
    results.pop(1)
    for schema, (ids, ended) in zip(schemas, results):
        assert ended, f"no EOS within {MAX_TOKENS} tokens for {json.dumps(schema)}: {byte_bpe.decode(ids)!r}"
        _check(schema, byte_bpe.decode(ids))


def test_json_object_mode(manager: StructuredOutputManager, byte_bpe: Tokenizer) -> None:
    specs: list[StructuredOutput | None] = [StructuredOutput("json_object")] * 6
    for ids, ended in _sample_batch(manager, byte_bpe, specs, seed=1):
        assert ended and isinstance(json.loads(byte_bpe.decode(ids)), dict)


def test_unmasked_rows_are_untouched(manager: StructuredOutputManager) -> None:
    logits = torch.rand(3, manager.vocab_size)
    before = logits.clone()
    m = manager.new_matcher(StructuredOutput("json_object"))
    manager.apply_masks(logits, [None, m, None])
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    assert torch.isinf(logits[1]).sum() > manager.vocab_size // 2
    bitmask = manager._bitmask
    manager.apply_masks(torch.rand(2, manager.vocab_size), [m, m])
    assert manager._bitmask is bitmask  # allocated once, reused


def test_compiled_once_per_spec(byte_bpe: Tokenizer) -> None:
    manager = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1)
    spec = StructuredOutput("json_schema", json.dumps(ALL[0]))
    first = manager.compile(spec)
    manager.new_matcher(spec, max_tokens=100)
    manager.new_matcher(StructuredOutput("json_schema", json.dumps(ALL[0])), max_tokens=900)
    assert manager.compile(spec) is first and manager.num_cached == 1



def test_a_spec_being_compiled_is_not_compiled_again(byte_bpe: Tokenizer) -> None:
    """xgrammar's compile time grows faster than the grammar (a request with a few dozen tool schemas compiles
    for seconds, minutes with hundreds): a second request for the spec while it compiles (the same tools sent
    again, or a client's retry after it gave up on the first) waits for that compile instead of doing it again
    beside it; a compile that fails is tried again by the waiter."""
    manager = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1)
    compile_once = manager._compile
    started, release = threading.Event(), threading.Event()
    calls: list[StructuredOutput] = []

    def slow_compile(spec: StructuredOutput):  # type: ignore[no-untyped-def]
        calls.append(spec)
        started.set()
        assert release.wait(10)
        return compile_once(spec)

    manager._compile = slow_compile  # type: ignore[method-assign]
    spec = StructuredOutput("json_schema", json.dumps(ALL[0]))
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(manager.compile, spec)
        assert started.wait(10)
        again = [pool.submit(manager.compile, StructuredOutput("json_schema", json.dumps(ALL[0]))) for _ in range(2)]
        time.sleep(0.2)  # the second and third requests are waiting, not compiling
        assert len(calls) == 1 and not any(f.done() for f in again)
        release.set()
        assert all(f.result(10) is first.result(10) for f in again)
    assert len(calls) == 1 and manager.num_cached == 1

    bad = StructuredOutput("json_schema", "{not json")
    started.clear(), release.clear()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(manager.compile, bad)
        assert started.wait(10)
        again = [pool.submit(manager.compile, bad)]
        time.sleep(0.2)
        release.set()
        for f in (first, *again):
            with pytest.raises(InvalidRequest):
                f.result(10)
    assert len(calls) == 3 and not manager._compiling

def test_bad_specs_are_invalid_requests(manager: StructuredOutputManager) -> None:
    with pytest.raises(InvalidRequest):
        manager.compile(StructuredOutput("json_schema", "{not json"))
    with pytest.raises(InvalidRequest):
        manager.compile(StructuredOutput("ebnf", "root ::= undefined_rule"))


def test_bounds_only_narrow() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "a": {"type": "array", "items": {"type": "integer"}},
            "m": {"type": "string", "format": "email"},
        },
    }
    bounded = bound_schema(schema, GrammarLimits())
    assert "maxLength" not in bounded["properties"]["s"]  # plain strings: JsonGuard's job
    assert bounded["properties"]["a"]["maxItems"] == GrammarLimits().max_array_items
    assert bounded["properties"]["a"]["items"]["maximum"] == 10**12 - 1
    assert "format" not in bounded["properties"]["m"] and "@" in bounded["properties"]["m"]["pattern"]
    assert schema["properties"]["s"] == {"type": "string"}  # the original is not modified
    assert bound_regex(r"^[a-z]+\+x*(ab)?$", 5) == r"^[a-z]{1,5}\+x{0,5}(ab){0,1}$"
    assert GrammarLimits().wind_down_at(256) == 64 and GrammarLimits().wind_down_at(4096) == 3840


def test_a_tags_schemas_are_bounded_in_place() -> None:
    """bound_tag_schemas: each json_schema node of a structural tag narrowed, at any depth, with the limits'
    whitespace bound unless the tag sets its own."""
    array = {"type": "array", "items": {"type": "integer"}}
    tag = {"type": "structural_tag", "format": {"type": "triggered_tags", "tags": [
        {"begin": "<a>", "content": {"type": "json_schema", "json_schema": array}, "end": "</a>"},
        {"begin": "<b>", "content": {"type": "json_schema", "json_schema": array, "max_whitespace_cnt": 1}}]}}
    limits = GrammarLimits(max_whitespace=4)
    bound_tag_schemas(tag, limits)
    first, second = (t["content"] for t in tag["format"]["tags"])
    assert first["json_schema"]["maxItems"] == second["json_schema"]["maxItems"] == limits.max_array_items
    assert first["max_whitespace_cnt"] == 4 and second["max_whitespace_cnt"] == 1
    assert "maxItems" not in array  # the schema given is copied, not narrowed


@pytest.mark.parametrize("bad", [0, -1])
def test_whitespace_bound_is_at_least_one(bad: int) -> None:
    """No whitespace at all cannot be said in a structural tag (xgrammar: max_whitespace_cnt must be positive):
    a tool call's grammar under max_whitespace=0 failed to compile, every request with tools a 400."""
    with pytest.raises(ValueError, match="max_whitespace"):
        GrammarLimits(max_whitespace=bad)


@pytest.mark.parametrize("max_whitespace", [1, None])
def test_the_least_whitespace_bounds_schemas_and_tool_calls(byte_bpe: Tokenizer, max_whitespace: int | None) -> None:
    """The smallest whitespace bound there is (1) and none compile schemas and structural tags alike."""
    manager = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1,
                                      limits=GrammarLimits(max_whitespace=max_whitespace))
    for spec in (StructuredOutput("json_schema", json.dumps(ALL[0])), tool_call_constraint(TOOLS, "auto"),
                 tool_call_constraint(TOOLS, "required")):
        assert manager.new_matcher(spec, MAX_TOKENS) is not None


@pytest.mark.parametrize("family", list(ToolFamily))
@pytest.mark.parametrize("choice", ["required", "named"])
@pytest.mark.parametrize("parallel", [True, False])
def test_tool_choice_grammar_yields_valid_calls(
    manager: StructuredOutputManager, byte_bpe: Tokenizer, family: ToolFamily, choice: str, parallel: bool
) -> None:
    tool_choice = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else "required"
    spec = tool_call_constraint(TOOLS, tool_choice, family, parallel_tool_calls=parallel)
    assert spec is not None
    repairer = ToolRepairer(TOOLS, family)
    for ids, ended in _sample_batch(manager, byte_bpe, [spec] * 4, seed=7):
        assert ended
        text = byte_bpe.decode(ids, skip_special_tokens=False)  # as the API decodes requests with tools
        result = repairer.repair_text(text)
        assert result.calls and all(o.outcome == "valid" for o in result.outcomes), (text, result.outcomes)
        assert result.content == ""
        if choice == "named":
            assert {c.name for c in result.calls} == {"get_weather"}
        if not parallel or choice == "named":
            assert len(result.calls) + result.num_duplicates == 1


@pytest.mark.parametrize("family", list(ToolFamily))
def test_auto_allows_text_then_a_valid_call(
    manager: StructuredOutputManager, byte_bpe: Tokenizer, family: ToolFamily
) -> None:
    spec = tool_call_constraint(TOOLS, "auto", family)
    assert spec is not None
    m = manager.new_matcher(spec)
    prefix = {"hermes": '<tool_call>\n{"name": "', "llama3_json": '{"name": "', "mistral": '[TOOL_CALLS][{"name": "'}[
        family.value
    ]
    ids = byte_bpe.encode("Let me check. " + prefix + "get_weather", add_special_tokens=False)
    if family is ToolFamily.HERMES:
        assert byte_bpe.token_to_id("<tool_call>") in ids  # the marker token itself is allowed
    for token in ids:
        assert m.accept_token(token)
    # From the marker on, the mask allows only the schema: an argument of the wrong type is refused.
    middle = '", "parameters": ' if family is ToolFamily.LLAMA3 else '", "arguments": '
    for token in byte_bpe.encode(middle + '{"city": ', add_special_tokens=False):
        assert m.accept_token(token)
    assert not m.accept_token(byte_bpe.encode("5", add_special_tokens=False)[0])


def test_tool_choice_none_and_errors() -> None:
    assert tool_call_constraint(TOOLS, "none") is None
    assert tool_call_constraint([], "auto") is None
    with pytest.raises(InvalidRequest):
        tool_call_constraint(TOOLS, {"type": "function", "function": {"name": "missing"}})
    with pytest.raises(InvalidRequest):
        tool_call_constraint(TOOLS, "sometimes")
    with pytest.raises(InvalidRequest):
        tool_call_constraint([], "required")


def test_response_format_and_ollama_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    strict = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}
    assert response_format_constraint(strict) == StructuredOutput("json_schema", json.dumps(schema))
    assert response_format_constraint({"type": "json_object"}) == StructuredOutput("json_object")
    assert response_format_constraint({"type": "text"}) is None
    assert ollama_format_constraint("json") == StructuredOutput("json_object")
    assert ollama_format_constraint(schema) == StructuredOutput("json_schema", json.dumps(schema))
    with pytest.raises(InvalidRequest):
        response_format_constraint({"type": "json_schema", "json_schema": {"name": "x"}})


def test_sentencepiece_vocabulary(sp_bpe: Tokenizer) -> None:
    """Metaspace pieces with <0xNN> byte fallback (Llama 2 / Mistral style) work like byte-level BPE."""
    manager = StructuredOutputManager(sp_bpe, sp_bpe.vocab_size + PAD, max_threads=2)
    import xgrammar as xgr

    assert manager.tokenizer_info.vocab_type == xgr.VocabType.BYTE_FALLBACK
    schemas = ALL[::5]
    for start in range(0, len(schemas), 8):
        batch = schemas[start : start + 8]
        specs: list[StructuredOutput | None] = [StructuredOutput("json_schema", json.dumps(s)) for s in batch]
        for schema, (ids, ended) in zip(batch, _sample_batch(manager, sp_bpe, specs, seed=start)):
            assert ended
            _check(schema, sp_bpe.decode(ids))
    spec = tool_call_constraint(TOOLS, "required", ToolFamily.MISTRAL)
    for ids, ended in _sample_batch(manager, sp_bpe, [spec] * 4, seed=3):
        result = ToolRepairer(TOOLS, ToolFamily.MISTRAL).repair_text(sp_bpe.decode(ids, skip_special_tokens=False))
        assert ended and result.calls and result.ok
    logits = torch.zeros(1, manager.vocab_size)
    manager.apply_masks(logits, [manager.new_matcher(spec)])
    assert logits[0, sp_bpe.token_to_id("[TOOL_CALLS]")] == 0  # the model may use its own marker token


def test_other_special_tokens_are_never_allowed(manager: StructuredOutputManager, byte_bpe: Tokenizer) -> None:
    start = byte_bpe.token_to_id("<|start|>")
    assert start is not None
    for spec in (StructuredOutput("json_object"), tool_call_constraint(TOOLS, "auto", ToolFamily.HERMES)):
        logits = torch.zeros(1, manager.vocab_size)
        manager.apply_masks(logits, [manager.new_matcher(spec)])
        assert logits[0, start] == float("-inf")
        assert logits[0, byte_bpe.vocab_size :].eq(float("-inf")).all()  # padded lm_head rows


def test_ebnf_grammar(manager: StructuredOutputManager, byte_bpe: Tokenizer) -> None:
    spec = StructuredOutput("ebnf", 'root ::= ("yes" | "no") " " [0-9]{1,3}')
    for ids, ended in _sample_batch(manager, byte_bpe, [spec] * 6, seed=2):
        text = byte_bpe.decode(ids)
        assert ended and text.split(" ")[0] in ("yes", "no") and text.split(" ")[1].isdigit()


def test_compiled_grammars_are_bounded_in_bytes(byte_bpe: Tokenizer) -> None:
    """Schemas are client-chosen: the cache of compiled grammars stays within its bytes, newest kept."""
    probe = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1)
    one = probe.compile(StructuredOutput("json_schema", json.dumps(ALL[0]))).grammar.memory_size_bytes
    assert one > 0
    manager = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1, cache_bytes=3 * one)
    specs = [StructuredOutput("json_schema", json.dumps({"type": "object", "properties": {f"k{i}": {"type": "string"}},
                                                          "required": [f"k{i}"]})) for i in range(30)]
    compiled = [manager.compile(spec) for spec in specs]
    assert 1 <= manager.num_cached < 30 and manager.num_cached_bytes <= 3 * one
    kept = range(30 - manager.num_cached, 30)
    assert manager.num_cached_bytes == sum(compiled[i].grammar.memory_size_bytes + sys.getsizeof(specs[i].value)
                                           for i in kept)
    assert manager.compile(specs[-1]) is compiled[-1] and manager.compile(specs[0]) is not compiled[0]


def test_cached_grammars_count_their_spec_text(byte_bpe: Tokenizer) -> None:
    """A spec's text is the cache's key, kept alive with the grammar: a tool set of long descriptions (0.2 MB
    each here) compiles to a small grammar, and 256 of them held 50 MB past a 1 MB bound."""
    limit = 1 << 20
    manager = StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=1, cache_bytes=limit)
    specs = [StructuredOutput("json_schema", json.dumps({"type": "object", "description": f"{i} " + "x" * 200_000,
                                                          "properties": {"k": {"type": "string"}}}))
             for i in range(12)]
    compiled = [manager.compile(spec) for spec in specs]
    assert all(c.grammar.memory_size_bytes < 100_000 for c in compiled)  # the text is most of each entry
    assert 1 <= manager.num_cached <= 5 and manager.num_cached_bytes <= limit
    assert manager.num_cached_bytes >= sum(len(spec.value) for spec in specs[-manager.num_cached:])
    assert manager.compile(specs[-1]) is compiled[-1]


def test_more_threads_than_cores_start_without_xgrammars_warning(byte_bpe: Tokenizer, capfd) -> None:
    """The batch mask filler takes at most the cores there are: xgrammar would use no more, and wrote a warning
    on stderr at every server start on a machine with fewer than 4 cores."""
    import os

    capfd.readouterr()
    StructuredOutputManager(byte_bpe, byte_bpe.vocab_size + PAD, max_threads=(os.cpu_count() or 1) + 4)
    assert "larger than the number of hardware threads" not in capfd.readouterr().err
