"""GPU-only: the whole engine on CUDA (Triton kernels, CUDA graphs) against transformers, every architecture.

float32 on both sides (our Triton dots run in IEEE float32, torch leaves TF32 off for matmuls), so the
bounds are the CPU tests' bounds loosened only for the different summation orders of GPU kernels.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from velollm.config import EngineConfig
from velollm.engine.llm_engine import LLMEngine
from velollm.engine.loader.hf_folder import load_hf_folder

from .conftest import ARCHS
from .helpers import greedy, random_prompts, run_all

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cuda_engine(folder, dtype: str = "float32") -> LLMEngine:
    return LLMEngine(load_hf_folder(folder), EngineConfig(device="cuda", dtype=dtype, max_num_seqs=8, kv_cache_memory=64 << 20))


def _hf_greedy(folder, prompt: list[int], new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy tokens and the logits of every step, float32 on the GPU."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    ids = torch.tensor([prompt], device="cuda")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=0, eos_token_id=None)
    return out.sequences[0, len(prompt):].tolist(), torch.stack(out.logits)[:, 0].float()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_cuda_engine_greedy_matches_transformers(tiny_models, arch):
    pytest.importorskip("triton")
    folder = tiny_models[arch]
    prompts = random_prompts([1, 17, 40], seed=7)
    engine = _cuda_engine(folder)
    ours = run_all(engine, prompts, greedy(24, logprobs=1))
    paths = engine.runner.paths()
    assert paths["attention"] == "paged/triton" and paths["graph_replays"] > 0
    for prompt, got in zip(prompts, ours):
        want, hf_logits = _hf_greedy(folder, prompt, 24)
        assert got.token_ids == want, f"{arch}: prompt of {len(prompt)} tokens"
        # The chosen token's logprob against transformers' log-softmax at every step.
        ref = torch.log_softmax(hf_logits, dim=-1).gather(1, torch.tensor(want, device="cuda")[:, None])[:, 0]
        chosen = torch.tensor([lp[t] for lp, t in zip(got.logprobs, got.token_ids)], device="cuda")
        assert (chosen - ref).abs().max().item() < 1e-3


def test_cuda_bf16_first_token_logits_close_to_transformers(tiny_models):
    """bf16 on both sides: the same argmax is not guaranteed, the logits agree to bf16 rounding."""
    pytest.importorskip("triton")
    folder = tiny_models["llama"]
    prompt = random_prompts([50], seed=3)[0]
    engine = _cuda_engine(folder, dtype="bfloat16")
    got = run_all(engine, [prompt], greedy(1, logprobs=20))[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([prompt], device="cuda")).logits[0, -1].float(), dim=-1)
    top = got.logprobs[0]
    err = max(abs(value - ref[token].item()) for token, value in top.items())
    assert err < 0.1, f"bf16 logprobs differ by {err}"


def test_cuda_bf16_varlen_prefill_matches_paged(tiny_models, monkeypatch):
    """Prompts without a cached prefix take torch's flash kernel on the step's k/v ("auto" in bf16); the
    logprobs agree with the paged Triton kernel's. A later prompt sharing two blocks (a prefix-cache hit)
    runs the paged kernel over the K/V the flash step wrote."""
    pytest.importorskip("triton")
    folder = tiny_models["qwen3"]
    prompts = random_prompts([1, 17, 40, 7], seed=4)
    prompts[3] = prompts[2][:32] + prompts[3]
    runs = {}
    for path in ("paged", "auto"):
        monkeypatch.setenv("VELOLLM_PREFILL_ATTENTION", path)
        engine = _cuda_engine(folder, dtype="bfloat16")
        runs[path] = run_all(engine, prompts[:3], greedy(4, logprobs=5)) + run_all(engine, prompts[3:], greedy(4, logprobs=5))
        assert engine.runner.paths()["prefill_no_prefix"] == ("varlen" if path == "auto" else "paged")
    for paged, varlen in zip(runs["paged"], runs["auto"]):
        first, other = paged.logprobs[0], varlen.logprobs[0]
        common = first.keys() & other.keys()
        assert len(common) >= 3
        err = max(abs(first[token] - other[token]) for token in common)
        assert err < 0.05, f"first-token logprobs differ by {err}"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_cuda_engine_decode_fusions_match_transformers(tiny_models, arch, monkeypatch):
    """The batch-1 decode fusions behind switches (split merge in the attention kernel, SiLU*mul in the
    down-projection GEMV), on in eager steps and in the captured graphs: transformers' greedy tokens."""
    pytest.importorskip("triton")
    monkeypatch.setenv("VELOLLM_DECODE_FUSED_REDUCE", "1")
    monkeypatch.setenv("VELOLLM_SILU_DOWN_GEMV", "1")
    folder = tiny_models[arch]
    prompts = random_prompts([1, 40], seed=8)
    engine = _cuda_engine(folder)
    for prompt in prompts:  # one at a time: batch 1, the graphs' many-split case
        got = run_all(engine, [prompt], greedy(24))[0]
        assert got.token_ids == _hf_greedy(folder, prompt, 24)[0]
    assert engine.runner.paths()["graph_replays"] > 0


def test_cuda_fp8_kv_cache_tracks_the_bf16_cache(tiny_models):
    """fp8 KV on CUDA (Triton write and reads, decode graphs) within the CPU test's bounds
    (tests/engine/test_fp8_kv_cache.py); GPUs without e4m3 keep the model dtype (with a warning)."""
    pytest.importorskip("triton")
    from velollm.kernels.fp8 import fp8_supported

    from .test_fp8_kv_cache import PROMPTS, STEPS, check_divergence

    folder = tiny_models["llama"]
    ref, fp8 = (LLMEngine(load_hf_folder(folder), EngineConfig(device="cuda", dtype="bfloat16", max_num_seqs=8,
                                                               kv_cache_memory=64 << 20, kv_cache_dtype=kv))
                for kv in ("auto", "fp8"))
    if not fp8_supported(torch.device("cuda")):
        assert fp8.runner.kv_caches[0][0].dtype == torch.bfloat16
        pytest.skip("fp8 KV needs compute capability 8.9")
    want = run_all(ref, PROMPTS, greedy(STEPS, logprobs=20))
    got = run_all(fp8, PROMPTS, greedy(STEPS, logprobs=20))
    paths = fp8.runner.paths()
    assert paths["kv_cache_dtype"] == "float8_e4m3fn" and paths["graph_replays"] > 0
    assert 2 * fp8.runner.kv_bytes_per_block() == ref.runner.kv_bytes_per_block()
    print("fp8 vs bf16 KV on CUDA, first divergence per prompt:", check_divergence(want, got, STEPS))


def test_a_closed_or_stopped_cuda_load_leaves_its_memory_reusable(tiny_models):
    """What a closed engine or a stopped load (load_stop) held goes back to torch's cache, not the driver:
    nothing stays allocated, and it is what cuda_free_bytes adds to the driver's free memory for the next
    load's fit check. Per-process figures only (pytest-xdist runs other GPU tests beside this one). A first
    identical engine sets up what torch keeps per process (cuBLAS workspaces, the capture stream)."""
    import gc
    import threading

    from velollm.engine.loader.load_stop import LoadStopped, run_stoppable

    folder = tiny_models["llama"]
    margin = 8 << 20
    # 256 sequences of up to 1,024 tokens: a 64 MiB KV cache, so the engine's footprint dwarfs the margin
    make = lambda: LLMEngine(load_hf_folder(folder), EngineConfig(device="cuda", dtype="bfloat16", max_num_seqs=256,
                                                                  kv_cache_memory=64 << 20))
    cached = lambda: torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    warm = make()
    run_all(warm, random_prompts([9, 30]), greedy(8))
    warm.close()
    del warm
    gc.collect()
    allocated = torch.cuda.memory_allocated()
    engine = make()
    run_all(engine, random_prompts([9, 30]), greedy(8))
    footprint = engine.memory_bytes()
    assert footprint > 8 * margin and torch.cuda.memory_allocated() - allocated >= footprint
    engine.close()
    del engine
    gc.collect()
    assert torch.cuda.memory_allocated() - allocated < margin
    assert cached() >= footprint  # free for this process, though mem_get_info counts it as in use
    stop = threading.Event()
    stop.set()  # the load stops at its first tensor, its weights already allocated on the device (to_empty)
    with pytest.raises(LoadStopped):
        run_stoppable(stop, make)
    assert torch.cuda.memory_allocated() - allocated < margin


def test_an_engine_on_an_indexed_device_gives_the_same_tokens(tiny_models):
    """device="cuda:N" (the last GPU: N > 0 on a multi-GPU machine) builds, captures and steps with its device
    current (engine.device.device_scope), async scheduling on: the tokens of a plain "cuda" engine."""
    pytest.importorskip("triton")
    folder = tiny_models["llama"]
    index = torch.cuda.device_count() - 1
    engine = LLMEngine(load_hf_folder(folder), EngineConfig(device=f"cuda:{index}", dtype="float32", max_num_seqs=8,
                                                            kv_cache_memory=64 << 20, async_scheduling=True))
    prompts = random_prompts([3, 21], seed=11)
    got = run_all(engine, prompts, greedy(12))
    want = run_all(_cuda_engine(folder), prompts, greedy(12))
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert engine.runner.kv_caches[0][0].device == torch.device("cuda", index)
    assert engine.runner.paths()["graph_replays"] > 0


def test_cuda_prompt_logprobs_match_transformers_and_decode_graphs_still_replay(tiny_models):
    """Scored prefill steps run eagerly (the hidden states of every prompt row) and leave the decode graphs alone."""
    pytest.importorskip("triton")
    folder = tiny_models["llama"]
    prompts = random_prompts([1, 17, 40], seed=9)
    engine = _cuda_engine(folder)
    ours = run_all(engine, prompts, greedy(8, prompt_logprobs=2))
    assert engine.runner.paths()["graph_replays"] > 0
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    for prompt, got in zip(prompts, ours):
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([prompt], device="cuda")).logits[0].float(), dim=-1)
        assert got.prompt_logprobs.logprobs[0] is None and len(got.prompt_logprobs.logprobs) == len(prompt)
        for i in range(1, len(prompt)):
            assert abs(got.prompt_logprobs.logprobs[i][prompt[i]] - ref[i - 1, prompt[i]].item()) < 2e-3
