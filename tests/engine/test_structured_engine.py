"""Constrained decoding inside the engine: answers parse and validate, batched with free requests."""

from __future__ import annotations

import json

import jsonschema
import pytest

from velollm.sampling_params import SamplingParams, StructuredOutput

from .helpers import make_engine, random_prompts, run_all

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 4}},
     "required": ["tags"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "score": {"type": "number", "minimum": -1, "maximum": 1}},
     "required": ["ok"], "additionalProperties": False},
]


@pytest.fixture(scope="module")
def engine(tiny_models):
    return make_engine(tiny_models["llama"])


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_json_schema_answers_validate(engine, index):
    schema = SCHEMAS[index]
    spec = StructuredOutput("json_schema", json.dumps(schema))
    prompts = random_prompts([7, 19, 33], seed=index)
    constrained = SamplingParams(temperature=1.0, seed=index, max_tokens=160, structured_output=spec)
    outputs = run_all(engine, prompts, constrained)
    for out in outputs:
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), schema)
    assert engine.block_manager.num_allocated_blocks == 0


def test_json_object_and_ignore_eos_still_end(engine):
    spec = StructuredOutput("json_object")
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=200, ignore_eos=True, structured_output=spec)
    [out] = run_all(engine, random_prompts([11], seed=9), params)
    assert out.finish_reason == "stop"
    assert isinstance(json.loads(out.text), dict)


def test_regex_answers_match_in_full(engine):
    """The regex kind (vLLM's guided_regex / structured_outputs.regex) compiles with xgrammar's regex converter."""
    import re

    pattern = "[a-d]{2,4}-(x|yz)[0-9]"
    params = SamplingParams(temperature=1.0, seed=2, max_tokens=40, structured_output=StructuredOutput("regex", pattern))
    outputs = run_all(engine, random_prompts([5, 9, 13], seed=4), params)
    for out in outputs:
        assert out.finish_reason == "stop" and re.fullmatch(pattern, out.text), out.text
    assert engine.block_manager.num_allocated_blocks == 0


def test_bad_schema_is_an_invalid_request(engine):
    from velollm.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        engine.add_request([5, 6, 7], SamplingParams(structured_output=StructuredOutput("json_schema", "{not json")))
    assert not engine.has_unfinished_requests()
