"""The kernel switches ($VELOLLM_PREFILL_ATTENTION, $VELOLLM_DECODE_FUSED_REDUCE, $VELOLLM_SILU_DOWN_GEMV) are read
once, where an engine is configured: a bad value stops LLM() before anything loads, and the forward passes never
read the environment. And the start-up probe of torch's flash varlen kernel, which "auto" takes on CUDA sm80+:
here on CPU with the kernel faked (flash_supported forced), a kernel that raises or computes wrong values leaves
the engine on the paged path, generating what an engine that never saw flash generates."""

from __future__ import annotations

import logging

import pytest

from velollm import LLM, kernels
from velollm.config import KernelSwitches
from velollm.kernels import varlen_attention as va

from .helpers import greedy, make_engine, random_prompts, run_all

SWITCH_VARIABLES = {
    "VELOLLM_PREFILL_ATTENTION": ("flash", "auto, varlen, paged"),
    "VELOLLM_DECODE_FUSED_REDUCE": ("yes", "0, 1"),
    "VELOLLM_SILU_DOWN_GEMV": ("true", "0, 1"),
}


def test_switches_from_the_environment():
    assert KernelSwitches.from_env({}) == KernelSwitches("auto", False, False)
    assert KernelSwitches.from_env({"VELOLLM_PREFILL_ATTENTION": "", "VELOLLM_SILU_DOWN_GEMV": " "}) == KernelSwitches()
    on = KernelSwitches.from_env({"VELOLLM_PREFILL_ATTENTION": "paged", "VELOLLM_DECODE_FUSED_REDUCE": "1",
                                  "VELOLLM_SILU_DOWN_GEMV": "1"})
    assert on == KernelSwitches("paged", True, True)
    assert KernelSwitches.from_env({"VELOLLM_DECODE_FUSED_REDUCE": "0"}).decode_fused_reduce is False
    for name, (bad, allowed) in SWITCH_VARIABLES.items():
        with pytest.raises(ValueError) as info:
            KernelSwitches.from_env({name: bad})
        assert f"${name}" in str(info.value) and allowed in str(info.value) and repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="prefill_attention"):
        KernelSwitches(prefill_attention="flash")


@pytest.mark.parametrize("name", SWITCH_VARIABLES)
def test_a_bad_switch_stops_llm_before_loading(llama_folder, monkeypatch, name):
    bad, allowed = SWITCH_VARIABLES[name]
    monkeypatch.setenv(name, bad)
    loads = []
    monkeypatch.setattr("velollm.engine.loader.resolve.resolve_model", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match=f"{name} must be one of {allowed}"):
        LLM(str(llama_folder), device="cpu")
    assert not loads


def test_switches_are_read_once_per_engine(llama_folder, monkeypatch):
    """The engine keeps what the environment said when it was built: a later change (or a bad value) reaches
    no forward pass. Forced varlen on CPU runs the reference through the varlen dispatch."""
    prompts = random_prompts([9, 20], seed=3)
    monkeypatch.setenv("VELOLLM_PREFILL_ATTENTION", "paged")
    want = run_all(make_engine(llama_folder), prompts, greedy(6))
    calls = []
    real = kernels.varlen_prefill_attention
    monkeypatch.setattr(kernels, "varlen_prefill_attention", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("VELOLLM_PREFILL_ATTENTION", "varlen")
    engine = make_engine(llama_folder)
    assert engine.runner.switches.prefill_attention == "varlen"
    for name, (bad, _) in SWITCH_VARIABLES.items():
        monkeypatch.setenv(name, bad)
    got = run_all(engine, prompts, greedy(6))
    assert calls  # still the varlen path it was built with
    assert [o.token_ids for o in got] == [o.token_ids for o in want]


def test_the_engine_takes_switches_it_is_given(llama_folder, monkeypatch):
    monkeypatch.setenv("VELOLLM_PREFILL_ATTENTION", "flash")  # not read: the caller chose
    engine = make_engine(llama_folder, kernel_switches=KernelSwitches(prefill_attention="varlen"))
    assert engine.runner.paths()["prefill_no_prefix"] == "varlen"
    assert engine.config.kernel_switches == KernelSwitches(prefill_attention="varlen")


def test_no_probe_on_cpu(llama_folder, monkeypatch):
    def probe(*args):
        raise AssertionError("the flash probe ran on CPU")

    monkeypatch.setattr(va, "probe_flash", probe)
    monkeypatch.delenv("VELOLLM_PREFILL_ATTENTION", raising=False)
    engine = make_engine(llama_folder)
    assert engine.runner.paths()["prefill_no_prefix"] == "paged"
    assert run_all(engine, random_prompts([7], seed=1), greedy(3))[0].finish_reason == "length"


def _raises(*args):
    raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.")


def _wrong_scale(q, k, v, cu_seqlens, max_seqlen, scale):
    return va.varlen_causal_attention_ref(q, k, v, cu_seqlens, scale * 1.5)


def _not_causal(q, k, v, cu_seqlens, max_seqlen, scale):
    import torch.nn.functional as F

    out = q.clone()
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        heads = lambda t: t[start:end].transpose(0, 1)  # noqa: E731
        o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=scale, enable_gqa=True)
        out[start:end] = o.transpose(0, 1)
    return out


def _nan(q, k, v, cu_seqlens, max_seqlen, scale):
    return va.varlen_causal_attention_ref(q, k, v, cu_seqlens, scale) * float("nan")


@pytest.mark.parametrize("flash", [_raises, _wrong_scale, _not_causal, _nan], ids=["raises", "scale", "mask", "nan"])
def test_a_failing_flash_probe_keeps_the_paged_path(llama_folder, monkeypatch, caplog, flash):
    monkeypatch.delenv("VELOLLM_PREFILL_ATTENTION", raising=False)
    prompts = random_prompts([3, 17, 30, 1], seed=9)
    want = run_all(make_engine(llama_folder, enable_prefix_caching=False), prompts, greedy(8))
    calls = []
    monkeypatch.setattr(va, "flash_supported", lambda q: True)  # as on an sm80+ GPU in bf16
    monkeypatch.setattr(va, "varlen_causal_attention_flash", lambda *a: calls.append(1) or flash(*a))
    with caplog.at_level(logging.WARNING, logger="velollm.engine.prefill_path"):
        engine = make_engine(llama_folder, enable_prefix_caching=False)
    assert calls == [1]  # the probe, once
    assert engine.runner.paths()["prefill_no_prefix"] == "paged"
    assert "failed its start-up probe" in caplog.text and "paged kernel" in caplog.text
    got = run_all(engine, prompts, greedy(8))
    assert calls == [1]  # no step took the flash kernel
    assert [o.token_ids for o in got] == [o.token_ids for o in want]


def test_a_passing_flash_probe_takes_varlen(llama_folder, monkeypatch, caplog):
    monkeypatch.delenv("VELOLLM_PREFILL_ATTENTION", raising=False)
    prompts = random_prompts([3, 17, 30, 1], seed=9)
    want = run_all(make_engine(llama_folder, enable_prefix_caching=False), prompts, greedy(8))
    calls = []
    monkeypatch.setattr(va, "flash_supported", lambda q: True)
    monkeypatch.setattr(va, "varlen_causal_attention_flash",  # a correct kernel: the reference
                        lambda q, k, v, cu, max_seqlen, scale: calls.append(1) or va.varlen_causal_attention_ref(
                            q, k, v, cu, scale))
    with caplog.at_level(logging.WARNING):
        engine = make_engine(llama_folder, enable_prefix_caching=False)
    assert engine.runner.paths()["prefill_no_prefix"] == "varlen" and calls == [1]
    assert "probe" not in caplog.text
    got = run_all(engine, prompts, greedy(8))
    assert len(calls) > 1  # prefill steps took it
    assert [o.token_ids for o in got] == [o.token_ids for o in want]


def test_an_explicit_path_is_not_probed(llama_folder, monkeypatch):
    monkeypatch.setattr(va, "flash_supported", lambda q: True)
    monkeypatch.setattr(va, "probe_flash", _raises)
    for path in ("varlen", "paged"):
        monkeypatch.setenv("VELOLLM_PREFILL_ATTENTION", path)
        assert make_engine(llama_folder).runner.paths()["prefill_no_prefix"] == path
