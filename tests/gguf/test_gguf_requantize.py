"""velollm.engine.loader.gguf_requantize against llama.cpp's own quantizer (llama_model_quantize: Q8_0, Q4_K_M,
Q4_K_S) on the F32, F16 and BF16 fixtures and on a 10-layer model whose rows are not all multiples of 256 (the
Q5_0 / Q5_1 / Q8_0 / F16 fallbacks) and whose weights hold edge-case blocks: the same tensors get the same type
and the same bytes, and the metadata is kept."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from velollm.engine.loader.gguf import quantization_level
from velollm.engine.loader.gguf_file import GGUFFile
from velollm.engine.loader.gguf_requantize import RequantizeError, requantize

from .tiny_gguf import ArchSpec, state_dict, write_gguf

gguf = pytest.importorskip("gguf")


def _llama_cpp(src, out, level="Q8_0"):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{level}")
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params) == 0
    return out


def _llama_cpp_q8_0(src, out):
    return _llama_cpp(src, out)


def _same_tensors(ours, theirs) -> dict[str, str]:
    """Asserts that every tensor has llama.cpp's type, shape and bytes; {name: type name}."""
    mine, theirs_by_name = gguf.GGUFReader(ours), {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert sorted(t.name for t in mine.tensors) == sorted(theirs_by_name)  # (llama.cpp writes its own order)
    for a in mine.tensors:
        b = theirs_by_name[a.name]
        assert (a.tensor_type.name, list(a.shape)) == (b.tensor_type.name, list(b.shape)), a.name
        same = np.asarray(a.data).view(np.uint8) == np.asarray(b.data).view(np.uint8)
        assert same.all(), f"{a.name} ({a.tensor_type.name}): {np.size(same) - np.count_nonzero(same)} bytes differ"
    return {t.name: t.tensor_type.name for t in mine.tensors}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2's fixture ties its embedding and output
@pytest.mark.parametrize("source", ["F32", "F16", "BF16"])
def test_q8_0_as_llama_cpp_writes_it(fixtures, tmp_path, arch, source):
    src = fixtures.model(arch, source).path
    ours = tmp_path / "ours.gguf"
    seen = []
    written = requantize(src, ours, "Q8_0", on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    data = ours.read_bytes()  # hashed as it was written: the file's own digest and size
    assert (written.digest, written.size) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    theirs = gguf.GGUFReader(_llama_cpp_q8_0(src, tmp_path / "theirs.gguf"))
    mine = gguf.GGUFReader(ours)
    theirs_by_name = {t.name: t for t in theirs.tensors}  # (llama.cpp writes them in its own order)
    assert sorted(t.name for t in mine.tensors) == sorted(theirs_by_name)
    for a in mine.tensors:
        b = theirs_by_name[a.name]
        assert (a.tensor_type, list(a.shape)) == (b.tensor_type, list(b.shape)), a.name
        assert np.array_equal(np.asarray(a.data).view(np.uint8), np.asarray(b.data).view(np.uint8)), a.name
    assert {t.tensor_type.name for t in mine.tensors if len(t.shape) >= 2} == {"Q8_0"}
    with GGUFFile(ours) as q, GGUFFile(src) as f:  # as /api/show names them
        assert quantization_level(q) == "Q8_0" and quantization_level(f) == source
    source_fields = gguf.GGUFReader(src).fields
    for name, field in source_fields.items():
        if name.startswith("GGUF.") or name == "general.file_type":
            continue
        assert mine.fields[name].contents() == field.contents(), name
    assert mine.fields["general.quantization_version"].contents() == 2


def test_only_float_weights_are_quantized(fixtures, tmp_path):
    with pytest.raises(RequantizeError, match="only supported for F16, BF16 and F32 models, not Q8_0"):
        requantize(fixtures.model("llama", "Q8_0").path, tmp_path / "x.gguf", "Q8_0")
    with pytest.raises(RequantizeError, match="unsupported quantization type Q4_0"):
        requantize(fixtures.model("llama", "F16").path, tmp_path / "x.gguf", "Q4_0")


@pytest.mark.parametrize("level", ["Q4_K_M", "Q4_K_S"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("source", ["F32", "F16", "BF16"])
def test_k_quants_as_llama_cpp_writes_them(fixtures, tmp_path, level, arch, source):
    src = fixtures.model(arch, source).path
    seen = []
    requantize(src, tmp_path / "ours.gguf", level, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    kinds = _same_tensors(tmp_path / "ours.gguf", _llama_cpp(src, tmp_path / "theirs.gguf", level))
    out = "token_embd.weight" if arch == "qwen2" else "output.weight"  # qwen2's fixture ties them
    assert kinds[out] == "Q6_K" and kinds["blk.0.attn_q.weight"] == "Q4_K"
    assert kinds["blk.0.attn_v.weight"] == ("Q5_K" if level == "Q4_K_S" else "Q4_K")
    if level == "Q4_K_M":  # use_more_bits(1, 2)
        assert kinds["blk.1.attn_v.weight"] == kinds["blk.1.ffn_down.weight"] == "Q6_K"
    else:  # the first four attn_v, none of the first 2 // 8 ffn_down
        assert (kinds["blk.1.attn_v.weight"], kinds["blk.1.ffn_down.weight"]) == ("Q5_K", "Q4_K")
    mine = gguf.GGUFReader(tmp_path / "ours.gguf")
    assert mine.fields["general.file_type"].contents() == {"Q4_K_M": 15, "Q4_K_S": 14}[level]
    with GGUFFile(tmp_path / "ours.gguf") as q:
        assert quantization_level(q) == level


ODD = ArchSpec("llama", hidden=256, layers=10, heads=4, kv_heads=2, head_dim=64, intermediate=288)
ODDER = ArchSpec("llama", hidden=96, layers=1, heads=3, kv_heads=1, head_dim=32, intermediate=80)


def _edge_rows(sd):
    """Edge-case rows in tensors of each block type: zeros, constants, tiny, huge, sparse."""
    rng = np.random.default_rng(3)
    for name in ("model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                 "model.layers.0.mlp.down_proj.weight", "lm_head.weight"):
        w = sd[name]
        w[0] = 0
        w[1] = 0.5
        w[2] = -0.25
        w[3] = torch.from_numpy(rng.standard_normal(w.shape[1]).astype(np.float32) * 1e-20)
        w[4] = torch.from_numpy(rng.standard_normal(w.shape[1]).astype(np.float32) * 1e4)
        w[5, :32] = 0
        w[6, ::3] = 0
        w[7, 7] = 60000.0
    return sd


@pytest.mark.parametrize("level", ["Q4_K_M", "Q4_K_S", "Q8_0"])
@pytest.mark.parametrize("source", ["F32", "F16"])
def test_fallbacks_and_edge_blocks_as_llama_cpp_writes_them(fixtures, tmp_path, level, source):
    tok = fixtures.tokenizer("llama-bpe")
    for spec in (ODD, ODDER):
        src = write_gguf(tmp_path / f"{spec.hidden}-{source}.gguf", spec,
                         _edge_rows(state_dict(spec, len(tok.tokens), seed=5)), tok, source)
        ours = tmp_path / f"ours-{spec.hidden}.gguf"
        requantize(src, ours, level)
        kinds = _same_tensors(ours, _llama_cpp(src, tmp_path / f"theirs-{spec.hidden}.gguf", level))
        if level == "Q8_0":
            continue
        if spec is ODD:  # ffn_down rows of 288: Q4_K -> Q5_0, Q6_K -> Q8_0, Q5_K -> Q5_1
            down = [kinds[f"blk.{i}.ffn_down.weight"] for i in range(10)]
            v = [kinds[f"blk.{i}.attn_v.weight"] for i in range(10)]
            if level == "Q4_K_M":  # use_more_bits(i, 10): layers 0, 3, 6, 8, 9
                assert down == ["Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q5_0", "Q8_0", "Q8_0"]
                assert v == ["Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q6_K", "Q6_K"]
            else:  # the first 10 // 8 ffn_down and the first four attn_v get Q5_K
                assert down == ["Q5_1"] + ["Q5_0"] * 9 and v == ["Q5_K"] * 4 + ["Q4_K"] * 6
        else:  # rows of 96: Q5_0 / Q8_0; ffn_down rows of 80: F16
            assert kinds["blk.0.attn_q.weight"] == "Q5_0" and kinds["output.weight"] == "Q8_0"
            assert kinds["blk.0.ffn_down.weight"] == "F16"


def test_threads_write_the_bytes_one_thread_writes(fixtures, tmp_path, monkeypatch):
    """Small chunks (several per tensor, in flight across tensor boundaries) on 3 threads: the file of the serial
    path, byte for byte, the progress still growing to the total."""
    from velollm.engine.loader import gguf_requantize

    monkeypatch.setattr(gguf_requantize, "CHUNK_VALUES", 4096)
    src = fixtures.model("llama", "F16").path
    for workers in (1, 3):
        seen = []
        requantize(src, tmp_path / f"{workers}.gguf", "Q4_K_M", lambda d, t, seen=seen: seen.append((d, t)),
                   workers=workers)
        assert len(seen) > len(gguf.GGUFReader(src).tensors)  # more chunks than tensors
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == seen[-1][1]
    assert (tmp_path / "1.gguf").read_bytes() == (tmp_path / "3.gguf").read_bytes()


def test_an_error_in_a_worker_is_raised_and_stops_the_pool(fixtures, tmp_path, monkeypatch):
    import threading

    from velollm.engine.loader import gguf_requantize, kquants

    calls = []

    def fail_on_the_fourth(x):
        calls.append(threading.current_thread().name)
        if len(calls) == 4:
            raise MemoryError("cannot allocate the chunk's buffers")
        return kquants.quantize_q4_k(x)

    monkeypatch.setattr(gguf_requantize, "CHUNK_VALUES", 4096)
    monkeypatch.setitem(gguf_requantize._BLOCKS, "Q4_K", (256, fail_on_the_fourth))
    with pytest.raises(MemoryError, match="cannot allocate"):
        requantize(fixtures.model("llama", "F16").path, tmp_path / "out.gguf", "Q4_K_M", workers=2)
    assert all(name.startswith("velollm-quantize") for name in calls)  # (it did run on the pool)
    assert not [t for t in threading.enumerate() if t.name.startswith("velollm-quantize")]


def test_an_error_in_on_progress_stops_the_threads_at_once(fixtures, tmp_path, monkeypatch):
    """A caller's on_progress that raises (a streamed create whose client left) ends the pool before requantize
    returns, not when its traceback is collected."""
    import threading

    from velollm.engine.loader import gguf_requantize

    class Stop(Exception):
        pass

    def stop_after_some(done, total):
        if done > total // 4:
            raise Stop

    monkeypatch.setattr(gguf_requantize, "CHUNK_VALUES", 4096)
    with pytest.raises(Stop):
        requantize(fixtures.model("llama", "F16").path, tmp_path / "out.gguf", "Q4_K_M", stop_after_some, workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("velollm-quantize")]
