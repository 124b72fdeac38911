"""A tiny Qwen3 with Qwen3's real tokenizer and chat template (`qwen3_tokenizer_folder`: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen3(qwen3_tokenizer_folder, tmp_path_factory) -> Path:
    """A random 2-layer Qwen3 with Qwen3's real tokenizer and chat template."""
    from tests.qwen3_fixture import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", qwen3_tokenizer_folder)
