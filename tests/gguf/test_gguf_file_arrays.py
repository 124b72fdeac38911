"""GGUFFile's max_array_size (Ollama's ggml.Decode maxArraySize, what /api/show without `verbose` reads): a metadata
array of more items is read past, its value None; everything else is parsed as in a full read."""

from __future__ import annotations

import pytest

from velollm.engine.loader.gguf_file import GGUFFile
from velollm.errors import ModelLoadError


def test_arrays_over_the_limit_are_read_past(fixtures):
    path = fixtures.model("llama", "Q8_0").path
    with GGUFFile(path) as full, GGUFFile(path, max_array_size=0) as bare:
        vocab = len(full.metadata["tokenizer.ggml.tokens"])
        assert set(bare.metadata) == set(full.metadata) and bare.tensors == full.tensors
        for key, value in full.metadata.items():
            is_array = isinstance(value, list) or getattr(value, "ndim", 0) == 1
            if is_array and len(value):
                assert bare.metadata[key] is None, key
            else:
                assert bare.metadata[key] == value, key
    with GGUFFile(path, max_array_size=vocab) as some:  # a limit keeps what fits under it
        assert len(some.metadata["tokenizer.ggml.tokens"]) == vocab
    with GGUFFile(path, max_array_size=vocab - 1) as fewer:
        assert fewer.metadata["tokenizer.ggml.tokens"] is None


def test_a_file_cut_inside_a_skipped_array_is_truncated(fixtures, tmp_path):
    data = fixtures.model("llama", "Q8_0").path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:data.find(b"tokenizer.ggml.tokens") + 200])  # inside the vocabulary's strings
    with pytest.raises(ModelLoadError, match="truncated GGUF header"):
        GGUFFile(cut, max_array_size=0)
