"""`velollm benchmark`: exact token counts, rates from the clocks, roofline from the measured copy."""

from __future__ import annotations

import json

import pytest

from velollm.cli import main
from velollm.engine.benchmark import run_benchmark, weight_bytes

from .helpers import make_engine


def test_run_benchmark_counts_and_rates(llama_folder):
    engine = make_engine(llama_folder, max_num_seqs=8)
    result = run_benchmark(engine, num_requests=6, input_len=20, output_len=7)
    d, t = result.decode, result.throughput
    assert (d.prompt_tokens, d.output_tokens) == (20, 7)
    assert (t.num_requests, t.prompt_tokens, t.output_tokens) == (6, 120, 42)
    assert d.decode_tok_s > 0 and d.ttft_s > 0 and t.output_tok_s == pytest.approx(42 / t.seconds)
    assert result.weight_bytes == weight_bytes(engine.runner.model) > 0
    assert d.roofline_tok_s == pytest.approx(result.copy_bytes_per_s / result.weight_bytes)
    assert not engine.has_unfinished_requests() and engine.block_manager.num_allocated_blocks == 0


def test_run_benchmark_refuses_lengths_past_the_context(llama_folder):
    engine = make_engine(llama_folder, max_model_len=32)
    with pytest.raises(ValueError, match="exceeds the context"):
        run_benchmark(engine, num_requests=2, input_len=30, output_len=8)


def test_cli_json(llama_folder, capsys):
    assert main(["benchmark", "--model", str(llama_folder), "--device", "cpu", "--num-prompts", "4",
                 "--input-len", "9", "--output-len", "5", "--kv-cache-memory", "16MiB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(llama_folder) and out["device"] == "cpu" and out["dtype"] == "float32"
    assert out["throughput"]["output_tokens"] == 20 and out["throughput"]["output_tok_s"] > 0
    assert out["decode"]["output_tokens"] == 5 and 0 < out["decode"]["fraction_of_roofline"]


def test_cli_table_and_errors(llama_folder, capsys):
    assert main(["benchmark", "--model", str(llama_folder), "--device", "cpu", "--num-prompts", "2",
                 "--input-len", "8", "--output-len", "4"]) == 0
    table = capsys.readouterr().out
    assert "batch-1 decode" in table and "of roofline" in table and "output tok/s" in table
    assert main(["benchmark", "--model", str(llama_folder), "--num-prompts", "0"]) == 2
    assert "--num-prompts must be at least 1" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(llama_folder), "--device", "cpu", "--max-model-len", "16",
                 "--input-len", "12", "--output-len", "8"]) == 1
    assert "exceeds the context" in capsys.readouterr().err
    assert main(["benchmark", "--model", "/no/such/model"]) == 1
    assert "error:" in capsys.readouterr().err
