"""Corrupt or unsupported GGUF files fail with typed errors naming the file, before any tensor is loaded."""

from __future__ import annotations

import struct
from collections import namedtuple

import pytest

from velollm.engine.loader import gguf as gguf_loader
from velollm.engine.loader import gguf_jobs
from velollm.engine.loader.resolve import resolve_model
from velollm.errors import InvalidRequest, ModelLoadError, ModelNotFound, UnsupportedModel


def _patched(src, dst, mutate):
    data = bytearray(src.read_bytes())
    mutate(data)
    dst.write_bytes(bytes(data))
    return dst


def _tensor_type_offset(data: bytearray, name: bytes) -> int:
    """Offset of the u32 type field of tensor `name` in the header: name, n_dims, dims, type."""
    i = data.find(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, i)[0]
    return i + 4 + 8 * n_dims


def test_truncated_file(fixtures, tmp_path):
    src = fixtures.model("llama", "Q8_0").path
    half = _patched(src, tmp_path / "half.gguf", lambda d: d.__delitem__(slice(len(d) // 2, None)))
    with pytest.raises(ModelLoadError, match="truncated") as err:
        resolve_model(str(half))
    assert str(half) in str(err.value)
    head = _patched(src, tmp_path / "head.gguf", lambda d: d.__delitem__(slice(200, None)))
    with pytest.raises(ModelLoadError, match="truncated GGUF header") as err:
        resolve_model(str(head))
    assert str(head) in str(err.value)


def test_bad_magic(fixtures, tmp_path):
    from velollm.engine.loader.gguf_file import GGUFFile

    bad = _patched(fixtures.model("llama", "Q8_0").path, tmp_path / "bad.gguf", lambda d: d.__setitem__(slice(0, 4), b"GGML"))
    with pytest.raises(InvalidRequest, match="is not a model") as err:
        resolve_model(str(bad))
    assert str(bad) in str(err.value) and err.value.param == "model" and "GGML" not in str(err.value)
    with pytest.raises(ModelLoadError, match="bad magic") as err:
        GGUFFile(bad)
    assert str(bad) in str(err.value) and "GGML" not in str(err.value)


@pytest.mark.parametrize("content", [b"root:$6$secret:19000:0:99999:7:::\n", b"", b"GG"])
def test_a_file_that_is_no_model_is_named_never_echoed(tmp_path, content):
    path = tmp_path / "shadow"
    path.write_bytes(content)
    with pytest.raises(InvalidRequest) as err:
        resolve_model(str(path))
    assert err.value.param == "model" and str(path) in str(err.value)
    assert "root" not in str(err.value).replace(str(tmp_path), "") and "secret" not in str(err.value)


@pytest.mark.parametrize("spec", ["/" + "a" * 256, "x" * 300, "a/" * 2100, "\ud800.gguf", "bad\x00name", ""])
def test_names_no_file_system_holds_are_400s(spec):
    with pytest.raises(InvalidRequest) as err:
        resolve_model(spec)
    assert err.value.param == "model"


@pytest.mark.parametrize("type_id, shown", [(99, "unknown GGML tensor type 99"), (16, "IQ2_XXS")])
def test_unknown_tensor_type(fixtures, tmp_path, type_id, shown):
    def mutate(data):
        struct.pack_into("<I", data, _tensor_type_offset(data, b"blk.0.attn_v.weight"), type_id)

    bad = _patched(fixtures.model("llama", "Q8_0").path, tmp_path / "type.gguf", mutate)
    with pytest.raises(UnsupportedModel, match=shown) as err:
        resolve_model(str(bad))
    assert "blk.0.attn_v.weight" in str(err.value)


def test_unknown_architecture(fixtures, tmp_path):
    def mutate(data):
        j = data.find(b"llama", data.find(b"general.architecture"))
        data[j:j + 5] = b"gemma"

    bad = _patched(fixtures.model("llama", "Q8_0").path, tmp_path / "arch.gguf", mutate)
    with pytest.raises(UnsupportedModel, match="architecture 'gemma'"):
        resolve_model(str(bad))


def test_missing_path_is_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match="nope.gguf"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_too_big_for_memory_is_unsupported_before_loading(fixtures, monkeypatch):
    import psutil

    Mem = namedtuple("Mem", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem(1024, 1024))
    loaded = []
    real = gguf_loader.map_bytes  # every tensor read goes through it: the config's and the weights' (any path)
    for module in (gguf_loader, gguf_jobs):
        monkeypatch.setattr(module, "map_bytes", lambda f, info: loaded.append(info.name) or real(f, info))
    with pytest.raises(UnsupportedModel, match="only 0.0 GiB is free on cpu"):
        resolve_model(str(fixtures.model("llama", "Q8_0").path), device="cpu")
    assert loaded == ["rope_freqs.weight"]  # read for the config; no weight was dequantized


def test_cuda_fit_counts_memory_torch_caches_but_no_tensor_holds(fixtures, monkeypatch):
    """A model unloaded or a load stopped (load_stop) returns its memory to torch's caching allocator, not
    to the driver: mem_get_info alone would call it in use and refuse a model that fits (mocked CUDA)."""
    import torch

    from velollm.engine.loader.source import cuda_free_bytes

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 40 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 15 * gib)
    assert cuda_free_bytes("cuda:0") == 26 * gib
    config = fixtures.model("llama", "Q8_0")  # any config: only the fit is checked
    from velollm.engine.loader.gguf import GGUFFile, read_config

    with GGUFFile(config.path) as f:
        model_config = read_config(f, "bfloat16")
    gguf_loader.check_memory(model_config, 20 * gib, "gguf", "cuda:0")  # 1 GiB free + 25 GiB cached
    with pytest.raises(UnsupportedModel, match="only 26.0 GiB is free on cuda:0"):
        gguf_loader.check_memory(model_config, 30 * gib, "gguf", "cuda:0")


def test_a_load_parses_the_header_once_and_refuses_a_file_changed_since(fixtures, tmp_path, monkeypatch):
    """gguf_source parses the header (config, tokenizer, tensor table); the weights are read with that tensor table,
    not a second parse (a 128k-token vocabulary takes 0.2-0.3 s). A file rewritten in between is refused: the config
    and the table describe the old one."""
    import os
    import shutil

    import torch

    from velollm.engine.loader import gguf_file

    path = shutil.copy(fixtures.model("llama", "Q8_0").path, tmp_path / "m.gguf")
    parses = []

    class Counted(gguf_file._Cursor):
        def __init__(self, *args, **kwargs):
            parses.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf_file, "_Cursor", Counted)
    source = resolve_model(str(path), device="cpu", dtype="float32")
    source.load_tokenizer()
    parsed = len(parses)
    weights = dict(source.iter_weights())
    assert len(parses) == parsed and weights and all(isinstance(t, torch.Tensor) for t in weights.values())
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelLoadError, match="m.gguf changed since it was read"):
        next(source.iter_weights())
    assert dict(resolve_model(str(path), device="cpu", dtype="float32").iter_weights()).keys() == weights.keys()
