"""The serving benchmark's inputs: ShareGPT-like lengths (seeded, at the documented medians and totals), the
async-scheduling switch read off `velollm serve --help`, and the shape models' full-vocabulary tokenizer."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from async_toggle import UNSUPPORTED, serve_settings  # noqa: E402
from serving import SHAREGPT_INPUT_MEDIAN, SHAREGPT_OUTPUT_MEDIAN, sharegpt_like_lengths  # noqa: E402


def test_sharegpt_like_lengths_are_seeded_and_match_vllms_run():
    lengths = sharegpt_like_lengths(1000, seed=0)
    assert lengths == sharegpt_like_lengths(1000, seed=0)
    assert lengths != sharegpt_like_lengths(1000, seed=1)
    inputs, outputs = [i for i, _ in lengths], [o for _, o in lengths]
    # vLLM's 1,000-prompt ShareGPT run: 215k input / 197k output tokens (perf_anchors.md 3b)
    assert sum(inputs) == pytest.approx(215_000, rel=0.03)
    assert sum(outputs) == pytest.approx(197_000, rel=0.03)
    assert statistics.median(inputs) == pytest.approx(SHAREGPT_INPUT_MEDIAN, rel=0.05)
    assert statistics.median(outputs) == pytest.approx(SHAREGPT_OUTPUT_MEDIAN, rel=0.05)
    assert all(4 <= i <= 1024 and o >= 4 and i + o <= 2048 for i, o in lengths)


def test_sharegpt_like_lengths_clip_to_small_models():
    lengths = sharegpt_like_lengths(200, seed=3, max_model_len=128, max_input=64, max_output=16)
    assert all(1 <= o <= 16 and i <= 64 and i + o <= 128 for i, o in lengths)
    assert max(i for i, _ in lengths) == 64 and max(o for _, o in lengths) == 16


@pytest.mark.parametrize("help_text, expected", [
    ("  --enforce-eager\n", [(UNSUPPORTED, [])]),
    ("  --async-scheduling, --no-async-scheduling\n", [("on", ["--async-scheduling"]),
                                                       ("off", ["--no-async-scheduling"])]),
    ("  --async-scheduling    overlap the host\n", [("on", ["--async-scheduling"]), ("off", [])]),
    ("  --async-scheduling {on,off}\n", [("on", ["--async-scheduling", "on"]), ("off", ["--async-scheduling", "off"])]),
])
def test_serve_settings_follow_the_servers_flag(help_text, expected):
    assert serve_settings("both", help_text) == expected
    assert serve_settings("on", help_text) == expected[:1]


def test_shape_tokenizer_decodes_every_id(tmp_path):
    from shapes import write_tokenizer

    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    folder = tmp_path / "model"
    folder.mkdir()
    write_tokenizer(folder, 4096)
    tokenizer = Tokenizer.from_folder(folder)
    assert tokenizer.vocab_size == 4096
    special = tokenizer.special_ids
    assert all(tokenizer.decode([i]) for i in range(4096) if i not in special)
    assert tokenizer.decode([4000]) == " w4000"
    assert tokenizer.encode("hello world") == Tokenizer.from_folder(ensure_demo(tmp_path / "demo")).encode("hello world")
