"""fp8 (e4m3) KV cache end to end on the CPU (the torch references read it): half the KV bytes, and
nearly the tokens of the bfloat16 cache.

The tiny model has random weights, so its next-token distributions are flat (mean top-1 logprob about
-2.4) and full of near-ties: equal tokens cannot be demanded. What is measured instead, with the bfloat16
cache as the reference and both engines computing in bfloat16 (only the KV storage differs):
- teacher-forced, over every prefix of the reference's greedy outputs: how often the top-1 agrees and how
  far the logprob of the reference's token moves;
- free-running greedy decoding (the decode kernels over the fp8 cache): where each prompt first diverges,
  and that it diverges only at a near-tie.
Calibration on this model (teacher-forced, 256 steps): bfloat16 vs float32 weights-and-cache agree on
96% of steps with a mean logprob gap of 0.025 (max 0.15); the fp8 cache, whose 3 mantissa bits are 5
fewer than bfloat16's (so ~32x its rounding error per value), agrees on 82-84% with a mean gap of 0.13
(max 0.86). The bounds below leave about 2x room on those figures.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine.helpers import greedy, make_engine, random_prompts, run_all
from tests.greedy_agreement import assert_greedy_agrees
from velollm import LLM, SamplingParams
from velollm import kernels
from velollm.config import EngineConfig

PROMPTS = random_prompts([5, 17, 33, 48, 70, 9], seed=3)
STEPS = 24
MIN_AGREEMENT = 0.7
MEAN_GAP, MAX_GAP = 0.25, 1.5


@pytest.fixture(scope="module")
def engines(llama_folder):
    ref = make_engine(llama_folder, dtype="bfloat16")
    fp8 = make_engine(llama_folder, dtype="bfloat16", kv_cache_dtype="fp8")
    yield ref, fp8
    ref.close()
    fp8.close()


def test_fp8_cache_halves_the_kv_bytes(engines):
    ref, fp8 = engines
    k_cache, v_cache = fp8.runner.kv_caches[0]
    assert k_cache.dtype == v_cache.dtype == torch.float8_e4m3fn
    assert ref.runner.kv_caches[0][0].dtype == torch.bfloat16
    assert 2 * fp8.runner.kv_bytes_per_block() == ref.runner.kv_bytes_per_block()
    # The same 32 MiB budget holds twice the blocks, so twice the tokens.
    assert fp8.runner.num_blocks == 2 * ref.runner.num_blocks
    assert fp8.runner.kv_cache_bytes() == ref.runner.kv_cache_bytes() == 32 << 20
    assert fp8.settings().kv_cache_dtype == "float8_e4m3fn" and ref.settings().kv_cache_dtype == "bfloat16"
    assert fp8.runner.paths()["kv_cache_dtype"] == "float8_e4m3fn"


def test_fp8_cache_within_a_full_sequence_budget_takes_half_the_memory(llama_folder):
    # A budget larger than every sequence at full length can use: the cache is sized by tokens, not bytes.
    kw = dict(dtype="bfloat16", kv_cache_memory=1 << 30, max_num_seqs=2)
    ref, fp8 = make_engine(llama_folder, **kw), make_engine(llama_folder, kv_cache_dtype="fp8", **kw)
    try:
        assert fp8.runner.num_blocks == ref.runner.num_blocks
        assert 2 * fp8.runner.kv_cache_bytes() == ref.runner.kv_cache_bytes()
        # What /api/ps reports as the model's size follows.
        assert ref.memory_bytes() - fp8.memory_bytes() == ref.runner.kv_cache_bytes() // 2
    finally:
        ref.close()
        fp8.close()


def _logprob(entry: dict[int, float], token_id: int) -> float:
    return entry.get(token_id, min(entry.values()))  # outside the top 20: at most the 20th's logprob


def test_teacher_forced_top1_agrees_on_most_steps(engines):
    ref, fp8 = engines
    outputs = run_all(ref, PROMPTS, greedy(STEPS))
    prefixes = [p + out.token_ids[:t] for p, out in zip(PROMPTS, outputs) for t in range(STEPS)]
    want = run_all(ref, prefixes, greedy(1, logprobs=20))
    got = run_all(fp8, prefixes, greedy(1, logprobs=20))
    agree = [w.token_ids[0] == g.token_ids[0] for w, g in zip(want, got)]
    gaps = [abs(w.logprobs[0][w.token_ids[0]] - _logprob(g.logprobs[0], w.token_ids[0])) for w, g in zip(want, got)]
    print(f"fp8 vs bf16 KV, teacher-forced: top-1 agrees on {sum(agree)}/{len(agree)} steps, logprob gap "
          f"mean {sum(gaps) / len(gaps):.3f} max {max(gaps):.3f}")
    assert sum(agree) >= MIN_AGREEMENT * len(agree)
    assert sum(gaps) / len(gaps) <= MEAN_GAP and max(gaps) <= MAX_GAP
    for w, g, same in zip(want, got, agree):
        if not same:  # a near-tie in the reference: its top-1 and fp8's pick are close
            assert w.logprobs[0][w.token_ids[0]] - _logprob(w.logprobs[0], g.token_ids[0]) <= 2 * MAX_GAP


def check_divergence(want: list, got: list, steps: int) -> list[int | None]:
    """Greedy outputs (logprobs=20) of the reference and the fp8 cache: up to where each prompt first
    diverges both decode the same context, so the same token's logprob stays within MAX_GAP; where it
    diverges, the reference had a near-tie. Returns the first divergence per prompt (None: none)."""
    report = []
    for w, g in zip(want, got):
        first = next((i for i, (a, b) in enumerate(zip(w.token_ids, g.token_ids)) if a != b), None)
        report.append(first)
        for i in range(steps if first is None else first):
            token = w.token_ids[i]
            assert abs(w.logprobs[i][token] - g.logprobs[i][token]) <= MAX_GAP
        if first is not None:
            entry = w.logprobs[first]
            assert entry[w.token_ids[first]] - _logprob(entry, g.token_ids[first]) <= 2 * MAX_GAP
    return report


def test_free_running_greedy_diverges_only_at_near_ties(engines):
    ref, fp8 = engines
    want = run_all(ref, PROMPTS, greedy(STEPS, logprobs=20))
    got = run_all(fp8, PROMPTS, greedy(STEPS, logprobs=20))
    report = check_divergence(want, got, STEPS)
    print(f"fp8 vs bf16 KV, free-running greedy: first divergence per prompt (None: all {STEPS} equal) {report}")


def test_varlen_prefill_sees_what_the_fp8_cache_holds(llama_folder, monkeypatch):
    """A prefill without a cached prefix may attend over its own k/v (the varlen path, CUDA's default) instead
    of the cache: it takes them through the fp8 round trip, so a prompt's logprobs do not depend on the path
    (nor so on whether a prefix was cached). float32 compute: only summation order differs."""
    prompts = random_prompts([3, 17, 30, 1], seed=9)
    params = greedy(8, logprobs=5)
    runs = {}
    for path in ("paged", "varlen"):
        monkeypatch.setenv(kernels.PREFILL_PATH_ENV, path)
        engine = make_engine(llama_folder, kv_cache_dtype="fp8", enable_prefix_caching=False)
        runs[path] = run_all(engine, prompts, params)
        engine.close()
    for paged, varlen in zip(runs["paged"], runs["varlen"], strict=True):
        # equal up to a near tie (another CPU's kernels sum in another order): tokens and top-5 logprobs to there
        agreed = assert_greedy_agrees(varlen.token_ids, varlen.logprobs, paged.token_ids, paged.logprobs, 1e-4, "paged")
        for a, b in zip(paged.logprobs[:agreed], varlen.logprobs[:agreed]):
            assert max(abs(a[t] - b[t]) for t in a) < 1e-4


def test_async_scheduling_keeps_the_fp8_tokens(llama_folder, engines):
    _, fp8 = engines
    want = run_all(fp8, PROMPTS, greedy(8))
    overlapped = make_engine(llama_folder, dtype="bfloat16", kv_cache_dtype="fp8", async_scheduling=True)
    try:
        assert [o.token_ids for o in run_all(overlapped, PROMPTS, greedy(8))] == [o.token_ids for o in want]
    finally:
        overlapped.close()


def test_engine_config_kv_cache_dtype():
    assert EngineConfig(kv_cache_dtype="fp8_e4m3").kv_cache_dtype == "fp8"
    assert EngineConfig().kv_cache_dtype == "auto"
    assert EngineConfig(kv_cache_dtype="fp8").cache_config().kv_cache_dtype == "fp8"
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        EngineConfig(kv_cache_dtype="q8_0")


def test_llm_api_takes_kv_cache_dtype(llama_folder):
    with LLM(str(llama_folder), device="cpu", dtype="bfloat16", kv_cache_memory=8 << 20,
             kv_cache_dtype="fp8_e4m3") as llm:
        [out] = llm.generate([5, 6, 7], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
        assert len(out.token_ids) == 5
        assert llm.engine.runner.kv_caches[0][0].dtype == torch.float8_e4m3fn
