"""Constrained answers after a reasoning model's thinking: free thinking, bounded, then valid output."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from tests.tools.corpus import TOOLS
from velollm.engine.text.json_guard import JsonGuard
from velollm.engine.text.schema_bounds import GrammarLimits
from velollm.engine.text.structured_output import StructuredOutputManager
from velollm.engine.text.tokenizer import Tokenizer
from velollm.tools.tool_grammar import tool_call_constraint
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_repair import ToolRepairer
from velollm.reasoning import ThinkTagParser
from velollm.sampling_params import ReasoningSpan, StructuredOutput

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}
THINK = ReasoningSpan("<think>", "</think>")
OPENED = ReasoningSpan("", "</think>")  # DeepSeek-R1: the prompt ends with "<think>\n"
MAYBE = ReasoningSpan("<think>", "</think>", optional=True)


@pytest.fixture(scope="module")
def manager(byte_bpe: Tokenizer) -> StructuredOutputManager:
    return StructuredOutputManager(byte_bpe, byte_bpe.vocab_size, max_threads=2)


def _generate(manager: StructuredOutputManager, tok: Tokenizer, spec: StructuredOutput, max_tokens: int,
              seed: int, bias: dict[str, float] | None = None) -> tuple[str, bool, list[int]]:
    """Random logits (plus `bias` on the ids of some texts), masked, argmax: (text, ended with EOS, ids)."""
    gen = torch.Generator().manual_seed(seed)
    matcher = manager.new_matcher(spec, max_tokens=max_tokens)
    ids: list[int] = []
    for _ in range(max_tokens):
        logits = torch.rand(1, manager.vocab_size, generator=gen)
        for text, value in (bias or {}).items():
            logits[0, tok.encode(text, add_special_tokens=False)[0]] += value
        manager.apply_masks(logits, [matcher])
        token = int(torch.argmax(logits[0]))
        assert matcher.accept_token(token)
        if token in tok.eos_token_ids:
            return tok.decode(ids, skip_special_tokens=False), True, ids
        ids.append(token)
    return tok.decode(ids, skip_special_tokens=False), False, ids


@pytest.mark.parametrize("span", [THINK, OPENED])
@pytest.mark.parametrize("seed", range(4))
def test_json_schema_after_thinking_is_valid_even_when_the_model_would_think_forever(
        manager, byte_bpe, span, seed):
    spec = StructuredOutput("json_schema", json.dumps(SCHEMA), reasoning=span)
    max_tokens = 160
    text, ended, ids = _generate(manager, byte_bpe, spec, max_tokens, seed)
    assert ended, text
    split = ThinkTagParser().split(text, in_reasoning=not span.begin)
    jsonschema.validate(json.loads(split.content), SCHEMA)
    if span.begin:
        assert text.startswith("<think>")
    # The budget counts the thinking's text; the tags are a few tokens more (one per byte at worst).
    thinking_tokens = next(i for i in range(len(ids)) if "</think>" in byte_bpe.decode(ids[:i]))
    assert thinking_tokens <= GrammarLimits().reasoning_budget(max_tokens) + len("<think></think>")


def test_optional_thinking_may_be_skipped(manager, byte_bpe):
    spec = StructuredOutput("json_object", reasoning=MAYBE)
    text, ended, _ = _generate(manager, byte_bpe, spec, 120, seed=0, bias={"{": 50.0})
    assert ended and text.startswith("{") and "</think>" not in text
    assert isinstance(json.loads(text), dict)


def test_tool_calls_come_after_the_thinking(manager, byte_bpe):
    required = tool_call_constraint(TOOLS, "required", ToolFamily.HERMES, parallel_tool_calls=False)
    spec = StructuredOutput(required.kind, required.value, reasoning=THINK)
    # The thinking is pushed to mention a call marker: it must stay thinking, not become a call.
    text, ended, _ = _generate(manager, byte_bpe, spec, 200, seed=1, bias={"<tool_call>": 3.0})
    assert ended
    split = ThinkTagParser().split(text)
    result = ToolRepairer(TOOLS, ToolFamily.HERMES).repair_text(split.content)
    assert result.ok and len(result.calls) == 1 and split.content.startswith("<tool_call>")
    assert "<tool_call>" in split.reasoning  # the bias worked: the thinking wrote a marker, and stayed thinking


def test_cache_keeps_one_grammar_per_spec_and_thinking_budget(manager):
    spec = StructuredOutput("json_schema", json.dumps(SCHEMA), reasoning=THINK)
    assert manager.compile(spec, 100) is manager.compile(spec, 100)
    assert manager.compile(spec, 100) is not manager.compile(spec, 400)
    plain = StructuredOutput("json_schema", json.dumps(SCHEMA))
    assert manager.compile(plain, 100) is manager.compile(plain, 400)


def test_guard_ignores_quotes_in_the_thinking_and_follows_the_answer():
    g = JsonGuard(3, wind_down_at=4, reasoning=THINK)
    for piece in (b"<think>", b'he said "a long quote', b" and more", b" still"):
        g.feed(piece)
        assert g.narrowing is None  # past wind_down_at, but thinking: the grammar bounds it
    g.feed(b"</thi")
    g.feed(b'nk>\n{"city": "abcd')
    assert g.narrowing == "close_string"


def test_guard_with_optional_thinking_skipped():
    g = JsonGuard(3, reasoning=MAYBE)
    g.feed(b" ")
    g.feed(b'{"city": "abcd')
    assert g.narrowing == "close_string"
