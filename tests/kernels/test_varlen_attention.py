"""Prefill attention over the step's own K/V (no cached prefix) and the rule choosing it over the paged path."""

from __future__ import annotations

import pytest
import torch

from velollm import kernels
from velollm.kernels import prefill_attention as pa
from velollm.kernels import varlen_attention as va

from .conftest import ON_GPU

# Fresh prompts: odd lengths, on and across 16-token blocks, a one-token prompt, and tiles straddling the diagonal.
Q_LENS = [15, 16, 17, 1, 33, 70]
TOL = {torch.float32: dict(atol=3e-5, rtol=3e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def _fresh_prompts(hq, hkv, head_dim, dtype, device, paged_kv, q_lens=Q_LENS):
    """q/k/v of a prefill step without a cached prefix, and the paged cache holding that same k/v."""
    k_cache, v_cache, block_tables = paged_kv(q_lens, hkv, head_dim, dtype, device)
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).to(device)
    q = torch.randn(sum(q_lens), hq, head_dim, device=device).to(dtype)
    k = torch.empty(sum(q_lens), hkv, head_dim, dtype=dtype, device=device)
    v = torch.empty_like(k)
    bs = k_cache.shape[1]
    for s, n in enumerate(q_lens):  # the step's contiguous k/v = what paged_kv put in the cache
        slots = block_tables[s, torch.arange(n, device=device) // bs].long() * bs + torch.arange(n, device=device) % bs
        k[cu[s]:cu[s + 1]] = k_cache.flatten(0, 1)[slots]
        v[cu[s]:cu[s + 1]] = v_cache.flatten(0, 1)[slots]
    context_lens = torch.tensor(q_lens, dtype=torch.int32, device=device)
    return q, k, v, k_cache, v_cache, block_tables, cu, context_lens


@pytest.mark.parametrize("hq,hkv", [(2, 2), (8, 2), (8, 1)])
def test_varlen_ref_matches_paged_ref(hq, hkv, device, paged_kv):
    q, k, v, k_cache, v_cache, tables, cu, lens = _fresh_prompts(hq, hkv, 64, torch.float32, device, paged_kv)
    got = va.varlen_causal_attention_ref(q, k, v, cu, 0.125)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, 0.125)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_varlen_ref_strided_v_and_empty_sequence(device, paged_kv):
    # v as the layer passes it (a column slice of the fused qkv output), and a zero-length row.
    q_lens = [9, 0, 20]
    q, k, v, k_cache, v_cache, tables, cu, lens = _fresh_prompts(4, 2, 32, torch.float32, device, paged_kv,
                                                                 [9, 1, 20])
    keep = torch.cat([torch.arange(0, 9), torch.arange(10, 30)]).to(device)
    q, k, v = q[keep], k[keep], v[keep]
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)
    v_view = qkv[:, -v[0].numel():].view(v.shape)
    assert not v_view.is_contiguous()
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).to(device)
    got = va.varlen_causal_attention_ref(q, k, v_view, cu, 0.2)
    for start, end in ((0, 9), (9, 29)):
        alone = torch.tensor([0, end - start], dtype=torch.int32, device=device)
        torch.testing.assert_close(got[start:end], va.varlen_causal_attention_ref(
            q[start:end], k[start:end], v[start:end], alone, 0.2))


@pytest.mark.skipif(not ON_GPU, reason="torch's flash kernel runs on CUDA only")
@pytest.mark.parametrize("hq,hkv,head_dim", [(8, 2, 64), (32, 8, 128), (4, 4, 96)])
def test_varlen_flash_matches_paged_ref(hq, hkv, head_dim, device, paged_kv):
    q, k, v, k_cache, v_cache, tables, cu, lens = _fresh_prompts(hq, hkv, head_dim, torch.bfloat16, device, paged_kv)
    assert va.flash_supported(q)
    got = va.varlen_causal_attention_flash(q, k, v[:, :, :], cu, max(Q_LENS), head_dim ** -0.5)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, head_dim ** -0.5)
    torch.testing.assert_close(got, want, **TOL[torch.bfloat16])
    assert kernels.prefill_attention_path(q) == "varlen"


def test_flash_not_taken_for_float32_or_cpu(device):
    assert not va.flash_supported(torch.zeros(1, 2, 64, dtype=torch.float32, device=device))
    assert not va.flash_supported(torch.zeros(1, 2, 64, dtype=torch.bfloat16, device="cpu"))


def test_path_rule_and_switch(monkeypatch):
    q_cpu = torch.zeros(1, 2, 64, dtype=torch.bfloat16)
    assert kernels.prefill_attention_path(q_cpu) == "paged"  # CPU default: the paged torch reference
    for choice in ("varlen", "paged"):
        assert kernels.prefill_attention_path(q_cpu, choice) == choice
    with pytest.raises(ValueError, match="varlen"):
        kernels.prefill_attention_path(q_cpu, "flash")
    monkeypatch.setenv(kernels.PREFILL_PATH_ENV, "varlen")  # the environment is read once, by KernelSwitches
    assert kernels.prefill_attention_path(q_cpu) == "paged"
    assert kernels.KernelSwitches.from_env().prefill_attention == "varlen"


def test_varlen_dispatch_on_cpu_runs_the_reference(paged_kv):
    q, k, v, k_cache, v_cache, tables, cu, lens = _fresh_prompts(8, 2, 64, torch.float32, "cpu", paged_kv)
    got = kernels.varlen_prefill_attention(q, k, v, cu, max(Q_LENS), 0.125)
    torch.testing.assert_close(got, pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, 0.125))


# varlen_causal_attention_flash passes these positionally, then `scale` by keyword (torch 2.13's schema).
FLASH_POSITIONAL = [("query", "Tensor"), ("key", "Tensor"), ("value", "Tensor"), ("cum_seq_q", "Optional[Tensor]"),
                    ("cum_seq_k", "Optional[Tensor]"), ("max_q", "int"), ("max_k", "int"), ("dropout_p", "float"),
                    ("is_causal", "bool"), ("return_debug_mask", "bool")]


def test_flash_call_matches_the_op_schema():
    """The private op's signature, as the wrapper calls it: a torch that renames, moves or drops an argument
    (or the `scale` keyword, or the output's place) fails here, without a GPU."""
    schema = torch.ops.aten._flash_attention_forward.default._schema
    positional = [a for a in schema.arguments if not a.kwarg_only]
    assert [(a.name, str(a.type)) for a in positional] == FLASH_POSITIONAL
    assert all(not a.has_default_value() for a in positional)
    [scale] = [a for a in schema.arguments if a.name == "scale"]
    assert scale.kwarg_only and str(scale.type) == "Optional[float]"
    assert all(a.has_default_value() for a in schema.arguments if a.kwarg_only)  # nothing else is required
    assert schema.returns[0].name == "output" and str(schema.returns[0].type) == "Tensor"


def test_flash_call_binds_on_the_meta_device():
    """The wrapper's real call through torch's dispatcher (argument binding and the meta kernel's shapes): packed
    GQA queries give packed queries' shape back, in their dtype."""
    q = torch.empty(45, 8, 128, dtype=torch.bfloat16, device="meta")
    k = torch.empty(45, 2, 128, dtype=torch.bfloat16, device="meta")
    cu = torch.empty(4, dtype=torch.int64, device="meta")  # the wrapper casts to int32 as the op needs
    out = va.varlen_causal_attention_flash(q, k, k, cu, 30, 128 ** -0.5)
    assert out.shape == q.shape and out.dtype == q.dtype and out.device.type == "meta"


def test_probe_passes_the_reference_and_fails_a_wrong_kernel(monkeypatch):
    """probe_flash's verdicts (float32 on CPU, the flash call replaced): agreeing, raising, off by a little."""
    ref = lambda q, k, v, cu, max_seqlen, scale: va.varlen_causal_attention_ref(q, k, v, cu, scale)  # noqa: E731
    args = (8, 2, 64, torch.float32, torch.device("cpu"))
    monkeypatch.setattr(va, "varlen_causal_attention_flash", ref)
    assert va.probe_flash(*args) is None
    monkeypatch.setattr(va, "varlen_causal_attention_flash", lambda *a: ref(*a) + 1e-3)
    assert "max |flash - reference|" in va.probe_flash(*args)
    monkeypatch.setattr(va, "varlen_causal_attention_flash", lambda *a: ref(*a)[:-1])
    assert "shape" in va.probe_flash(*args)

    def broken(*a):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(va, "varlen_causal_attention_flash", broken)
    assert va.probe_flash(*args) == "RuntimeError: no kernel image is available for execution on the device"


@pytest.mark.skipif(not ON_GPU, reason="torch's flash kernel runs on CUDA only")
@pytest.mark.parametrize("hq,hkv,head_dim", [(32, 8, 128), (16, 8, 64), (28, 4, 128), (8, 8, 256)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_passes_the_engine_probe_gpu(hq, hkv, head_dim, dtype):
    """What "auto" needs to take flash at engine start (velollm.engine.prefill_path): the probe passes at the
    supported models' head shapes, in both half dtypes."""
    assert va.probe_flash(hq, hkv, head_dim, dtype, torch.device("cuda")) is None
