"""A random Qwen3 with Qwen3's real template: JSON after the thinking is valid, thinking on and off."""

from __future__ import annotations

import json

import jsonschema
import pytest

from velollm import LLM, SamplingParams
from velollm.reasoning import ThinkingTemplate, ThinkSetting
from velollm.sampling_params import StructuredOutput

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "Weather in Paris for 3 days, as JSON."}]


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), device="cpu", kv_cache_memory=64 << 20)
    yield llm
    llm.close()


@pytest.mark.parametrize("think", [True, False])
def test_json_schema_stays_valid_with_thinking_on_and_off(llm, think):
    tok = llm.engine.tokenizer
    plan = ThinkingTemplate.of(tok.chat_template).plan(ThinkSetting(think), model="q", strict=True)
    prompt = tok.encode_chat(MESSAGES, **plan.template_kwargs)
    opened = plan.prompt_opened(tok.decode(prompt[-8:], skip_special_tokens=False))
    spec = plan.constrain(StructuredOutput("json_schema", json.dumps(SCHEMA)), opened)
    assert (spec.reasoning is not None) == think
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=96, structured_output=spec)
    [out] = llm.generate([prompt], params)
    split = plan.split(out.text, opened)
    jsonschema.validate(json.loads(split.content), SCHEMA)
    assert out.finish_reason == "stop"
    if think:
        assert out.token_ids[0] == tok.token_to_id("<think>")  # the grammar made the random model think
        # Forced within the thinking budget, as the one token Qwen3 writes it with.
        assert out.token_ids.count(tok.token_to_id("</think>")) == 1 and out.text.count("</think>") == 1
    else:
        assert split.reasoning == "" and "</think>" not in out.text
