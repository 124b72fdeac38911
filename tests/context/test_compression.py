"""The lossless compression steps, the compressor's measurements, summaries and the turn cache."""

from __future__ import annotations

import json

from velollm.context.compressor import Compressor
from velollm.context.dedupe import dedupe
from velollm.context.fitter import ContextFitter
from velollm.context.json_minify import minify, minify_tool_results
from velollm.context.report import ContextReport
from velollm.context.summary import summary_key, transcript, with_summary
from velollm.context.text_memo import TextMemo
from velollm.context.turn_cache import TurnCache
from velollm.context.whitespace import squeeze, squeeze_whitespace

from tests.context.char_chat import DOC, CharTokenizer, render

TOOL_JSON = json.dumps({"rows": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(5)]}, indent=2)


def chat() -> list[dict]:
    return [{"role": "system", "content": "sys"},
            {"role": "user", "content": "q1"}, {"role": "tool", "content": DOC},
            {"role": "user", "content": "q2"}, {"role": "tool", "content": DOC},
            {"role": "user", "content": "q3"}, {"role": "tool", "content": TOOL_JSON},
            {"role": "user", "content": "last"}]


def test_dedupe_refers_to_the_first_occurrence():
    out = dedupe(chat())
    assert out[2]["content"] == DOC and out[4]["content"] == "[identical to the tool result at position 2 above]"
    assert [m["role"] for m in out] == [m["role"] for m in chat()]
    short = [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]
    assert dedupe(short) == short  # too short to be worth a reference


def test_dedupe_paragraphs_inside_documents():
    para = "Paragraph of a document that is repeated in a later message with other text. " * 4
    messages = [{"role": "user", "content": f"intro\n\n{para}"}, {"role": "user", "content": f"{para}\n\nnew part"}]
    out = dedupe(messages)
    assert out[0] == messages[0]
    assert out[1]["content"].startswith("[paragraph identical to one in the user message at position 0]")
    assert out[1]["content"].endswith("new part")


def test_whitespace_keeps_indentation_and_json():
    assert squeeze("def f():\n    return  1   \n\n\n\nx") == "def f():\n    return 1\n\nx"
    tool = {"role": "tool", "content": '{"a": "two  spaces"}'}
    assert squeeze_whitespace([tool]) == [tool]


def test_json_minify_same_value_fewer_characters():
    assert json.loads(minify(TOOL_JSON)) == json.loads(TOOL_JSON) and len(minify(TOOL_JSON)) < len(TOOL_JSON)
    assert minify("not json") is None and minify("[1, 2") is None
    user = {"role": "user", "content": TOOL_JSON}
    assert minify_tool_results([user]) == [user]  # only tool results


def test_compressor_measures_each_step():
    tok = CharTokenizer()
    fitter = ContextFitter(render, tok)
    report = ContextReport("compress", 0, 0)
    out = Compressor().compress(chat(), fitter.count, report)
    assert report.saved_tokens["dedupe"] == len(DOC) - len(out[4]["content"])
    assert report.saved_tokens["json"] == len(TOOL_JSON) - len(minify(TOOL_JSON))
    assert set(report.step_seconds) == {"dedupe", "json", "whitespace"}


def test_compress_truncation_never_leaves_a_dangling_reference():
    fitter = ContextFitter(render, CharTokenizer())
    budget = len(render(Compressor().apply(chat()))) - 10  # the first turn must go even after compression
    fitted = fitter.fit(chat(), "compress", budget + 1, 1, Compressor())
    assert fitted.report is not None and fitted.report.dropped_messages[:2] == [1, 2]
    assert all("position 2" not in (m.get("content") or "") for m in fitted.messages)
    assert len(fitted.token_ids) <= budget


def test_summary_helpers():
    messages = chat()[1:5]
    assert summary_key(messages) == summary_key([dict(m) for m in messages]) != summary_key(chat()[1:3])
    text = transcript(messages, 200)
    assert text.startswith("user: q1\ntool: ") and " ... " in text
    assert with_summary(chat()[:1], "S")[0]["content"] == "sys\n\nSummary of the earlier conversation: S"
    assert with_summary([{"role": "user", "content": "x"}], "S")[0]["role"] == "system"
    cache = TextMemo(max_entries=1, max_chars=100)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") is None and cache.get("b") == "B"


def test_turn_cache_splices_the_generated_ids():
    tok = CharTokenizer()
    cache = TurnCache(min_chars=4)
    prompt = "<user>hello there<assistant>"
    prompt_ids = tok.encode(prompt)
    generated = [1001, 1002]  # ids a re-tokenisation of the answer would never give
    cache.remember_turn(tok, prompt, prompt_ids, generated)
    nxt = prompt + tok.decode(generated) + "<user>more<assistant>"
    encoded = cache.encode(tok, nxt)
    assert encoded.token_ids[: len(prompt_ids) + 2] == prompt_ids + generated
    assert encoded.num_reused == len(prompt_ids) + 2
    edited = cache.encode(tok, prompt + "edited answer")  # the client changed the answer: the prompt still counts
    assert encoded.num_reused and edited.num_reused == len(prompt_ids)
    assert cache.encode(tok, "<user>other<assistant>").num_reused == 0
