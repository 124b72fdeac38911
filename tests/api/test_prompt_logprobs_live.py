"""Prompt logprobs through the openai client against a live `velollm serve` on a tiny random Llama:
/v1/completions with echo + logprobs (lm-evaluation-harness's loglikelihood requests: token-id prompts,
max_tokens 0 or 1), streamed too, and vLLM's `prompt_logprobs` extra on completions and chat; each checked
against transformers on the same weights. Bad values are OpenAI 400s; no KV block is left held."""

from __future__ import annotations

import openai
import pytest
import torch
import transformers

from tests.api.conftest import ServerHandle
from tests.engine.conftest import build_tiny_model
from tests.engine.helpers import random_prompts
from tests.serve_process import start_serve, stop_serve
from tests.unit.test_text_offsets import by_bytes
from velollm.engine.text.tokenizer import Tokenizer

MODEL = "tiny-llama"
TOL = 1e-3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp("promptlp") / "llama", "llama")
    proc, url, log, _ = start_serve(tmp_path_factory.mktemp("promptlp-serve"), "--model", str(folder),
                                    "--served-model-name", MODEL, "--max-model-len", "256", "--kv-cache-memory",
                                    "32MiB", "--device", "cpu", "--dtype", "float32")
    try:
        yield folder, ServerHandle("live", url, model=MODEL, log=log)
    finally:
        stop_serve(proc)


@pytest.fixture(scope="module")
def hf(tiny):
    return transformers.AutoModelForCausalLM.from_pretrained(tiny[0], dtype=torch.float32)


@pytest.fixture(scope="module")
def tok(tiny) -> Tokenizer:
    return Tokenizer.from_folder(tiny[0])


@pytest.fixture
def oai(tiny) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny[1].url}/v1", api_key="x", max_retries=0, timeout=120)


def reference(hf, prompt: list[int]) -> torch.Tensor:
    """log_softmax of transformers' logits over the prompt: row p scores token p + 1."""
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([prompt])).logits[0].float(), dim=-1)


def token_text(hf_tokenizer, token_id: int) -> str:
    return hf_tokenizer.decode([token_id])


def assert_echo_logprobs(logprobs, prompt: list[int], ref: torch.Tensor, k: int, tok: Tokenizer) -> None:
    """The prompt's part of an echoed completion's logprobs (OpenAI legacy format), against the reference."""
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    for i in range(1, len(prompt)):
        row = ref[i - 1]
        assert abs(logprobs.token_logprobs[i] - row[prompt[i]].item()) < TOL, i
        top = logprobs.top_logprobs[i]
        want = row.topk(k).values.tolist() + [row[prompt[i]].item()]
        # keyed by text: ids that decode alike (pieces of one character) share a key, which keeps the best;
        # the top k, then the prompt token itself (OpenAI's up to logprobs + 1)
        assert 1 <= len(top) <= k + 1
        assert all(min(abs(v - w) for w in want) < TOL for v in top.values())
        assert top[logprobs.tokens[i]] >= logprobs.token_logprobs[i] - TOL
        assert abs(max(top.values()) - max(want)) < TOL
    # from 0 over the prompt's tokens (the characters complete before each: velollm/api/text_offsets.py), then the
    # answer's, from the echo's end
    assert logprobs.text_offset[: len(prompt)] == by_bytes(tok, prompt)
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_echo_max_tokens_zero_returns_the_prompt_scored(oai, hf, tok):
    """lm-eval's loglikelihood request: token ids, echo, logprobs, max_tokens 0: the prompt back, scored."""
    prompt = random_prompts([40], seed=21)[0]
    out = oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2, max_tokens=0, temperature=0)
    choice = out.choices[0]
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf.name_or_path)
    assert choice.text == tokenizer.decode(prompt)
    assert len(choice.logprobs.tokens) == len(prompt)
    assert_echo_logprobs(choice.logprobs, prompt, reference(hf, prompt), k=2, tok=tok)
    assert choice.finish_reason == "length"
    assert out.usage.prompt_tokens == len(prompt) and out.usage.completion_tokens == 0


def test_echo_max_tokens_one_appends_the_answer(oai, hf, tok):
    """max_tokens 1 (lm-eval's other form): the prompt's entries, then the generated token's."""
    prompt = random_prompts([33], seed=22)[0]
    ref = reference(hf, prompt)
    out = oai.completions.create(model=MODEL, prompt=[prompt], echo=True, logprobs=1, max_tokens=1, temperature=0)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(prompt) + 1
    assert_echo_logprobs(lp, prompt, ref, k=1, tok=tok)
    greedy = int(ref[-1].argmax())  # the answer's token: the last position's argmax, and its logprob
    assert abs(lp.token_logprobs[-1] - ref[-1, greedy].item()) < TOL
    assert out.usage.completion_tokens == 1


def test_top_logprobs_hold_the_sampled_token(oai):
    """OpenAI's legacy logprobs: "the API will always return the logprob of the sampled token, so there may be
    up to logprobs+1 elements" (vLLM's too). logprobs 0 gave an empty dict per token, and a sampled token
    outside the top k was missing from its own entry."""
    prompt = random_prompts([10], seed=26)[0]
    for k in (0, 1):
        out = oai.completions.create(model=MODEL, prompt=prompt, logprobs=k, max_tokens=12, temperature=2.0,
                                     seed=5, extra_body={"ignore_eos": True})
        lp = out.choices[0].logprobs
        assert len(lp.top_logprobs) == 12
        for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            assert 1 <= len(top) <= k + 1, (k, token)
            assert top.get(token, -float("inf")) >= value - TOL, (k, token)  # more: an id of the same text
    # at this temperature some token is not the top one: its entry holds it beside the top 1
    assert any(len(top) == 2 for top in lp.top_logprobs)


def test_text_prompt_echo(oai, hf, tok):
    prompt = "The quick brown fox jumps over the lazy dog."
    out = oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=0, max_tokens=3, temperature=0)
    choice = out.choices[0]
    ids = transformers.AutoTokenizer.from_pretrained(hf.name_or_path).encode(prompt)
    assert choice.text.startswith(prompt)
    lp = choice.logprobs
    assert "".join(lp.tokens[: len(ids)]) == prompt
    assert_echo_logprobs(lp, ids, reference(hf, ids), k=0, tok=tok)
    assert len(lp.tokens) == len(ids) + 3


def test_same_prompt_twice_scores_alike(oai, tiny):
    """The second request finds the prompt in the prefix cache and computes it again for its logprobs."""
    prompt = random_prompts([70], seed=23)[0]
    outs = [oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=3, max_tokens=0)
            for _ in range(2)]
    first, second = (o.choices[0].logprobs for o in outs)
    assert first.token_logprobs == second.token_logprobs and first.top_logprobs == second.top_logprobs
    assert outs[1].usage.prompt_tokens_details is None  # nothing taken from the cache
    plain = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=1)  # the blocks still serve others
    assert plain.usage.prompt_tokens_details.cached_tokens == 64
    assert tiny[1].wait_metric("velollm_allocated_blocks", lambda v: v == 0, model=MODEL) == 0


def test_streamed_echo_carries_the_prompt_first(oai, hf, tok):
    prompt = random_prompts([25], seed=24)[0]
    whole = oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2, max_tokens=4, temperature=0)
    chunks = list(oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2, max_tokens=4,
                                         temperature=0, stream=True))
    with_logprobs = [c.choices[0] for c in chunks if c.choices and c.choices[0].logprobs]
    first = with_logprobs[0]
    assert first.text.startswith(whole.choices[0].text[: len(first.text)]) and len(first.logprobs.tokens) > len(prompt)
    assert_echo_logprobs(first.logprobs, prompt, reference(hf, prompt), k=2, tok=tok)
    joined = {key: [x for c in with_logprobs for x in getattr(c.logprobs, key)] for key in
              ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    assert joined == {key: getattr(whole.choices[0].logprobs, key) for key in joined}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_streamed_echo_max_tokens_zero(oai):
    prompt = random_prompts([12], seed=25)[0]
    chunks = [c.choices[0] for c in oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=1,
                                                           max_tokens=0, stream=True) if c.choices]
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    assert len(tokens) == len(prompt)
    assert chunks[-1].finish_reason == "length"


def check_vllm_prompt_logprobs(entries, prompt: list[int], ref: torch.Tensor, k: int) -> None:
    assert len(entries) == len(prompt) and entries[0] is None
    for i in range(1, len(prompt)):
        row, token = ref[i - 1], prompt[i]
        entry = entries[i]
        assert abs(entry[str(token)]["logprob"] - row[token].item()) < TOL
        assert entry[str(token)]["rank"] == int((row > row[token]).sum()) + 1
        top = row.topk(k).indices.tolist()
        assert set(entry) == {str(t) for t in top} | {str(token)}
        for rank, token_id in enumerate(top, 1):
            assert entry[str(token_id)]["rank"] == rank and isinstance(entry[str(token_id)]["decoded_token"], str)


def test_vllm_prompt_logprobs_on_completions(oai, hf):
    prompt = random_prompts([30], seed=26)[0]
    out = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=2, extra_body={"prompt_logprobs": 3})
    choice = out.choices[0]
    check_vllm_prompt_logprobs(choice.model_extra["prompt_logprobs"], prompt, reference(hf, prompt), k=3)
    assert choice.logprobs is None and out.usage.completion_tokens == 2  # no answer logprobs asked


def test_vllm_prompt_logprobs_on_chat(oai, hf):
    messages = [{"role": "user", "content": "Paged attention stores keys and values in blocks."}]
    out = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, extra_body={"prompt_logprobs": 0})
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf.name_or_path)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.encode(text, add_special_tokens=False)
    assert out.usage.prompt_tokens == len(prompt)
    check_vllm_prompt_logprobs(out.model_extra["prompt_logprobs"], prompt, reference(hf, prompt), k=0)


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt_logprobs": -1}, "prompt_logprobs"),
    ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ({"prompt_logprobs": 10**12}, "prompt_logprobs"),
    ({"prompt_logprobs": "2"}, "prompt_logprobs"),
    ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
    ({"echo": True, "logprobs": 21}, "logprobs"),
    ({"max_tokens": 0}, "max_tokens"),  # 0 only with echo
])
def test_bad_values_are_openai_400s(oai, body, param):
    stream = body.pop("stream", False)
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model=MODEL, prompt="hi", stream=stream, extra_body=body)
    assert err.value.status_code == 400 and err.value.body["param"] == param
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=stream,
                                    extra_body={**body, "max_tokens": 1} if param == "prompt_logprobs" else {"n": 0})


def test_no_block_is_left_held(tiny, oai):
    prompt = random_prompts([90], seed=27)[0]
    out = oai.completions.create(model=MODEL, prompt=[prompt, prompt[:50]], echo=True, logprobs=1, max_tokens=1, n=2,
                                 temperature=0)
    # choices prompt by prompt, n each: every one scores its own prompt, then its one token
    assert [len(c.logprobs.tokens) for c in out.choices] == [91, 91, 51, 51]
    shared = [c.logprobs.token_logprobs[1:50] for c in out.choices]  # the first 50 tokens are both prompts'
    assert shared[1] == pytest.approx(shared[0], abs=TOL) and shared[2] == pytest.approx(shared[0], abs=TOL)
    assert out.choices[0].logprobs.token_logprobs[0] is out.choices[2].logprobs.token_logprobs[0] is None
    assert tiny[1].wait_metric("velollm_allocated_blocks", lambda v: v == 0, model=MODEL) == 0
