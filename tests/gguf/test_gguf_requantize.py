"""velollm.engine.loader.gguf_requantize against llama.cpp's own quantizer (llama_model_quantize, Q8_0) on the
F32, F16 and BF16 fixtures: the same tensors get the same type and the same bytes, and the metadata is kept."""

from __future__ import annotations

import numpy as np
import pytest

from velollm.engine.loader.gguf import quantization_level
from velollm.engine.loader.gguf_file import GGUFFile
from velollm.engine.loader.gguf_requantize import RequantizeError, requantize

gguf = pytest.importorskip("gguf")


def _llama_cpp_q8_0(src, out):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params) == 0
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2's fixture ties its embedding and output
@pytest.mark.parametrize("source", ["F32", "F16", "BF16"])
def test_q8_0_as_llama_cpp_writes_it(fixtures, tmp_path, arch, source):
    src = fixtures.model(arch, source).path
    ours = tmp_path / "ours.gguf"
    seen = []
    requantize(src, ours, "Q8_0", on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
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
    with pytest.raises(RequantizeError, match="only supported for F32, F16 and BF16 models; this one holds Q8_0"):
        requantize(fixtures.model("llama", "Q8_0").path, tmp_path / "x.gguf", "Q8_0")
    with pytest.raises(RequantizeError, match="unsupported quantization type Q4_K_M"):
        requantize(fixtures.model("llama", "F16").path, tmp_path / "x.gguf", "Q4_K_M")
