"""The offline Python API and `velollm generate`, as users call them."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import pytest
from transformers import AutoTokenizer

from velollm import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm(llama_folder):
    with LLM(str(llama_folder), device="cpu", kv_cache_memory=16 << 20) as model:
        yield model


def test_string_prompts_tokenize_like_transformers(llm, llama_folder):
    text = "The quick brown fox\n  def main():"
    [out] = llm.generate(text, SamplingParams(temperature=0, max_tokens=4))
    assert out.prompt_token_ids == AutoTokenizer.from_pretrained(llama_folder)(text).input_ids


def test_outputs_carry_tokens_text_reason_and_logprobs(llm):
    outs = llm.generate([[5, 6, 7], "hello"], SamplingParams(temperature=0, max_tokens=6, logprobs=3, ignore_eos=True))
    assert len(outs) == 2
    for out in outs:
        assert len(out.token_ids) == 6 and out.finish_reason == "length"
        assert len(out.logprobs) == 6
        for token_id, entry in zip(out.token_ids, out.logprobs):
            assert token_id in entry and 3 <= len(entry) <= 4
            assert max(entry.values()) <= 0


def test_n_and_seed(llm):
    params = SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=8, ignore_eos=True)
    first = llm.generate([[9, 10, 11]], params)
    second = llm.generate([[9, 10, 11]], params)
    assert len(first) == 3
    assert [o.token_ids for o in first] == [o.token_ids for o in second]
    assert len({tuple(o.token_ids) for o in first}) > 1


def test_close_releases_the_kv_cache(llama_folder):
    model = LLM(str(llama_folder), device="cpu", kv_cache_memory=8 << 20)
    cache = weakref.ref(model.engine.runner.kv_caches[0][0])
    model.close()
    gc.collect()
    assert cache() is None
    with pytest.raises(RuntimeError, match="closed"):
        model.generate("x")


def test_garbage_collection_releases_the_kv_cache(llama_folder):
    model = LLM(str(llama_folder), device="cpu", kv_cache_memory=8 << 20)
    cache = weakref.ref(model.engine.runner.kv_caches[0][0])
    del model
    gc.collect()
    assert cache() is None


def test_llm_never_keeps_the_process_alive(llama_folder):
    script = textwrap.dedent(f"""
        import threading
        from velollm import LLM, SamplingParams
        llm = LLM({str(llama_folder)!r}, device="cpu", kv_cache_memory=8 << 20)
        llm.generate("hi", SamplingParams(max_tokens=2))
        assert all(t.daemon for t in threading.enumerate() if t is not threading.main_thread())
        print("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_generate_command_streams_a_completion(tmp_path, monkeypatch):
    env = {"VELOLLM_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "velollm.cli", "generate", "--model", "demo", "--max-tokens", "12",
                             "--device", "cpu", "Once upon a time"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    # The command streams the same greedy completion the Python API gives for that prompt.
    monkeypatch.setenv("VELOLLM_CACHE", str(tmp_path))
    with LLM("demo", device="cpu", kv_cache_memory=256 << 20) as llm:
        [want] = llm.generate("Once upon a time", SamplingParams(max_tokens=12, temperature=0))
    assert len(want.token_ids) == 12 and result.stdout == want.text + "\n"
    bad = subprocess.run([sys.executable, "-m", "velollm.cli", "generate", "--model", str(tmp_path / "nope"), "x"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "not found" in bad.stderr
