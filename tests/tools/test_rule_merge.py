"""merge_identical_rules: each schema's copy of the JSON basics kept once, the language unchanged."""

from __future__ import annotations

import json

import torch
import xgrammar as xgr

from velollm.engine.text.grammar_vocab import build_tokenizer_info
from velollm.engine.text.rule_merge import merge_identical_rules
from velollm.engine.text.schema_bounds import GrammarLimits, bound_tag_schemas
from velollm.tools.tool_grammar import tool_call_constraint


def _rules(text: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in text.splitlines() if " ::= " in line)


def test_mutually_recursive_copies_merge_and_the_rest_stays() -> None:
    text = (
        'any ::= (("[" items "]") | ("x"))\n'
        'items ::= ((any "," items) | (any))\n'
        'any_1 ::= (("[" items_1 "]") | ("x"))\n'
        'items_1 ::= ((any_1 "," items_1) | (any_1))\n'
        'other ::= (("[" items "]") | ("y"))\n'
        'literal ::= (("items_1 any_1"))\n'  # names inside a literal are no references
        'capped[max_tokens=5] ::= (("x"))\n'
        'root ::= ((any_1 other literal capped))\n'
    )
    merged = _rules(merge_identical_rules(text))
    assert set(merged) == {"any", "items", "other", "literal", "capped[max_tokens=5]", "root"}
    assert merged["root"] == "((any other literal capped))"
    assert merged["items"] == '((any "," items) | (any))'
    assert merged["literal"] == '(("items_1 any_1"))'
    assert merge_identical_rules("not a grammar") == "not a grammar"


def _tool(index: int) -> dict:
    props = {f"query_{index}": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 100},
             "mode": {"type": "string", "enum": ["fast", f"custom_{index}"]},
             "filter": {"type": "object", "properties": {"field": {"type": "string"}, "value": {"type": "number"}}},
             "tags": {"type": "array", "items": {"type": "string"}}}
    return {"type": "function", "function": {"name": f"tool_{index}", "parameters": {
        "type": "object", "properties": props, "required": [f"query_{index}", "mode"]}}}


def _printed(num_tools: int, choice: str) -> str:
    tag = json.loads(tool_call_constraint([_tool(i) for i in range(num_tools)], choice).value)
    bound_tag_schemas(tag, GrammarLimits())
    return str(xgr.Grammar.from_structural_tag(json.dumps(tag)))


def test_tools_share_the_json_basics() -> None:
    """Each tool's schema came with its own ~140 rules of JSON basics, each compiled against the whole vocabulary
    (0.1 s a tool on a 150k vocabulary); merged, a tool adds only what is its own."""
    one, nine = (len(_rules(merge_identical_rules(_printed(n, "required")))) for n in (1, 9))
    unmerged_per_tool = (len(_rules(_printed(9, "required"))) - len(_rules(_printed(1, "required")))) / 8
    assert unmerged_per_tool > 100
    assert (nine - one) / 8 < 25


def test_merged_grammar_accepts_what_the_original_does(byte_bpe) -> None:
    compiler = xgr.GrammarCompiler(build_tokenizer_info(byte_bpe, byte_bpe.vocab_size), cache_enabled=False)
    text = _printed(3, "auto")
    original, merged = (compiler.compile_grammar(xgr.Grammar.from_ebnf(t)) for t in (text, merge_identical_rules(text)))
    # the properties in the order the grammar keeps (tool_specs sorts them)
    call = '<tool_call>\n{"name": "tool_1", "arguments": {"filter": {"field": "x", "value": -1.5}, ' \
           '"mode": "custom_1", "query_1": "a \\"b\\"", "tags": ["t", "u"]}}\n</tool_call>'
    cases = ["plain text", "text " + call, call.replace("custom_1", "custom_2"), call.replace('"query_1"', '"query_2"'),
             call.replace('"mode"', '"limit": 100, "mode"'), call.replace('"mode"', '"limit": 101, "mode"'),
             call.replace('"tags": [', '"tags": {')]
    for case in cases:
        verdicts = []
        for grammar in (original, merged):
            matcher = xgr.GrammarMatcher(grammar)
            verdicts.append(matcher.accept_string(case) and matcher.is_terminated())
        assert verdicts[0] == verdicts[1], case
    accepted = [xgr.GrammarMatcher(merged).accept_string(case) for case in cases]
    assert accepted == [True, True, False, False, True, False, False]
    # token by token, the same mask
    masks = [xgr.allocate_token_bitmask(1, byte_bpe.vocab_size) for _ in range(2)]
    matchers = [xgr.GrammarMatcher(grammar) for grammar in (original, merged)]
    for token in byte_bpe.encode("text " + call, add_special_tokens=False):
        for matcher, mask in zip(matchers, masks):
            matcher.fill_next_token_bitmask(mask)
            assert matcher.accept_token(token)
        assert torch.equal(masks[0], masks[1])
