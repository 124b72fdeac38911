"""output_kind "final_only": the same tokens and text as "delta", the text whole in the finishing delta."""

from __future__ import annotations

import pytest

from velollm.errors import InvalidRequest
from velollm.sampling_params import SamplingParams

from .helpers import greedy, make_engine, random_prompts, run_all


def _deltas(engine, prompt: list[int], params: SamplingParams) -> list:
    request = engine.add_request(prompt, params)
    deltas = []
    while engine.has_unfinished_requests():
        deltas += [d for d in engine.step() if d.request_id == request.request_id]
    return deltas


@pytest.mark.parametrize("seed", range(6))
def test_final_only_gives_the_streamed_text_once(llama_folder, seed):
    # Random ids of a byte-level BPE: characters split across tokens (held back, then flushed) included.
    engine = make_engine(llama_folder)
    prompt = random_prompts([7 + seed], seed=seed)[0]
    params = dict(temperature=0.9, seed=seed, max_tokens=40, logprobs=2)
    streamed = _deltas(engine, prompt, SamplingParams(**params))
    final = _deltas(engine, prompt, SamplingParams(**params, output_kind="final_only"))
    assert [d.token_ids for d in final] == [d.token_ids for d in streamed]  # ids still arrive per step
    assert [d.logprobs for d in final] == [d.logprobs for d in streamed]
    assert all(d.text == "" for d in final[:-1])
    assert final[-1].text == "".join(d.text for d in streamed) == engine.tokenizer.decode(
        [t for d in streamed for t in d.token_ids])
    assert final[-1].finish_reason == streamed[-1].finish_reason


def test_final_only_leaves_out_the_eos_token_as_streaming_does(llama_folder):
    engine = make_engine(llama_folder)
    prompt = random_prompts([12], seed=29)[0]
    [full] = run_all(engine, [prompt], greedy(20))
    stop_id = full.token_ids[5]
    engine.eos_token_ids = engine.outputs.eos_token_ids = frozenset({stop_id})
    want = run_all(engine, [prompt], SamplingParams(temperature=0, max_tokens=20))[0]
    got = run_all(engine, [prompt], SamplingParams(temperature=0, max_tokens=20, output_kind="final_only"))[0]
    assert got.finish_reason == want.finish_reason == "stop" and got.token_ids == want.token_ids
    assert got.text == want.text == engine.tokenizer.decode(want.token_ids[:-1])


def test_stop_strings_keep_incremental_text(llama_folder):
    engine = make_engine(llama_folder)
    prompt = random_prompts([12], seed=23)[0]
    text = run_all(engine, [prompt], greedy(40))[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert len(stop) == 3 and stop.strip()  # a real stop string, not an empty or blank one
    got = run_all(engine, [prompt], greedy(40, stop=[stop], output_kind="final_only"))[0]
    assert got.text == text[: text.index(stop)] and got.stop_reason == stop


def test_abort_returns_the_text_so_far(llama_folder):
    engine = make_engine(llama_folder)
    prompt = random_prompts([10], seed=5)[0]
    want = run_all(engine, [prompt], greedy(30))[0]
    request = engine.add_request(prompt, greedy(30, output_kind="final_only"))
    for _ in range(8):
        engine.step()
    delta = engine.abort_request(request.request_id)
    done = request.output_token_ids
    assert delta.finish_reason == "abort" and done == want.token_ids[: len(done)]
    assert delta.text == engine.tokenizer.decode(done)


def test_llm_generate_reads_whole_outputs(llama_folder):
    from velollm import LLM

    llm = LLM(str(llama_folder), device="cpu", dtype="float32", kv_cache_memory=32 << 20)
    prompts = random_prompts([5, 9], seed=3)
    got = llm.generate(prompts, greedy(24))
    want = run_all(make_engine(llama_folder), prompts, greedy(24))
    assert [(o.token_ids, o.text) for o in got] == [(o.token_ids, o.text) for o in want]
    llm.close()


def test_output_kind_is_validated():
    with pytest.raises(InvalidRequest) as info:
        SamplingParams(output_kind="cumulative")  # type: ignore[arg-type]
    assert info.value.param == "output_kind"
