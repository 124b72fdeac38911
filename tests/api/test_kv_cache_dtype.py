"""`velollm serve --kv-cache-dtype` (and Ollama's OLLAMA_KV_CACHE_TYPE): a live fp8-KV server through the
openai SDK, the flag and the variable mapped into EngineConfig, and a clear error for a bad value."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys

import httpx
import pytest

from tests.serve_process import REPO, start_serve, stop_serve
from velollm.commands import serve


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def _metric_line(text: str, prefix: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(prefix))


def _fp8_kv_bytes(tmp_path, max_num_seqs: int) -> int:
    """The demo model's KV cache at one byte per value, every sequence at full length (the 32 MiB budget
    is more than that): half of what its bfloat16 or float16 cache takes, a quarter of float32's."""
    [config_file] = (tmp_path / "cache").rglob("config.json")
    cfg = json.loads(config_file.read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    num_blocks = max_num_seqs * -(-cfg["max_position_embeddings"] // 16) + 1
    return num_blocks * 2 * cfg["num_hidden_layers"] * 16 * cfg["num_key_value_heads"] * head_dim


def test_fp8_server_through_the_openai_sdk(tmp_path):
    from openai import OpenAI

    proc, url, log, _ = start_serve(tmp_path, "--device", "cpu", "--kv-cache-memory", "32MiB",
                                    "--kv-cache-dtype", "fp8_e4m3", "--max-num-seqs", "4")
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        chat = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}],
                                              max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
        assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens >= 1
        assert all(lp.logprob <= 0 for lp in chat.choices[0].logprobs.content)
        stream = client.completions.create(model="demo", prompt="The quick", max_tokens=6, stream=True)
        assert sum(1 for chunk in stream if chunk.choices and chunk.choices[0].text) >= 1
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'kv_cache_dtype="float8_e4m3fn"' in _metric_line(metrics, 'velollm_engine_info{')
        kv_bytes = float(_metric_line(metrics, 'velollm_kv_cache_bytes{model="demo"}').split()[-1])
        assert kv_bytes == _fp8_kv_bytes(tmp_path, max_num_seqs=4)
        [loaded] = httpx.get(f"{url}/api/ps", timeout=10).json()["models"]
        assert loaded["size"] > kv_bytes and loaded["size_vram"] == 0  # weights + KV, on the CPU
        assert "float8_e4m3fn" in log.read_text()  # the start-up line that sizes the KV cache
    finally:
        stop_serve(proc)


def test_flag_and_ollama_variable_reach_the_engine_config(caplog):
    caplog.set_level(logging.INFO, logger="velollm.commands.engine_options")
    assert serve.build_config(_args(), {}).engine.kv_cache_dtype == "auto"
    assert serve.build_config(_args("--kv-cache-dtype", "fp8"), {}).engine.kv_cache_dtype == "fp8"
    assert serve.build_config(_args("--kv-cache-dtype", "fp8_e4m3"), {}).engine.kv_cache_dtype == "fp8"
    q8 = serve.build_config(_args(), {"OLLAMA_KV_CACHE_TYPE": "q8_0"})
    assert q8.engine.kv_cache_dtype == "fp8"
    assert "VeloLLM's 8-bit KV cache is fp8 e4m3" in caplog.text
    assert serve.build_config(_args(), {"OLLAMA_KV_CACHE_TYPE": "f16"}).engine.kv_cache_dtype == "auto"
    assert serve.build_config(_args(), {"OLLAMA_KV_CACHE_TYPE": "Q4_0"}).engine.kv_cache_dtype == "fp8"
    # The flag wins over the variable; an unknown value is ignored with a warning, as Ollama does.
    flag = serve.build_config(_args("--kv-cache-dtype", "auto"), {"OLLAMA_KV_CACHE_TYPE": "q8_0"})
    assert flag.engine.kv_cache_dtype == "auto"
    caplog.clear()
    assert serve.build_config(_args(), {"OLLAMA_KV_CACHE_TYPE": "int3"}).engine.kv_cache_dtype == "auto"
    assert "OLLAMA_KV_CACHE_TYPE=int3 is not one of" in caplog.text


@pytest.mark.parametrize("command", ["serve", "benchmark"])
def test_bad_kv_cache_dtype_is_a_clear_cli_error(command):
    result = subprocess.run([sys.executable, "-m", "velollm.cli", command, "--kv-cache-dtype", "int4"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1  # a usage error, as Ollama's CLI (cobra) exits on one
    choices = "(choose from 'auto', 'fp8', 'fp8_e4m3')"
    assert f"Error: argument --kv-cache-dtype: invalid choice: 'int4' {choices}" in result.stderr
