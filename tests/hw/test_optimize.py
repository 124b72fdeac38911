"""`velollm optimize`: the files it writes (each value with its reason) and what they contain."""

from __future__ import annotations

import subprocess
import sys

from velollm.commands.fits import ModelFit
from velollm.commands.optimize_files import settings_files
from velollm.hw.detect import GPUInfo, HardwareInfo
from velollm.hw.ollama_env import ollama_settings
from velollm.hw.recommend import recommend

H100 = HardwareInfo("x", 32, 256 << 30, 200 << 30, (GPUInfo(0, "H100", 80 << 30, (9, 0), used_memory=0),))


def _fit(name: str, max_len: int, context: int) -> ModelFit:
    return ModelFit(name, "ollama", True, "", "Q4_K_M", "bfloat16", 8 << 30, context, 500_000, max_len, "")


def test_files_for_a_gpu_machine():
    fits = [_fit("llama3.1:8b", 131072, 131072), _fit("qwen3:32b", 65536, 131072),
            ModelFit("llava:7b", "ollama", False, "unsupported architecture 'llava'")]
    files = {f.name: f.text for f in settings_files(recommend(H100), ollama_settings(H100), fits, "qwen3:32b", "H100")}
    assert set(files) == {"velollm-serve.sh", "ollama.env", "ollama.service.d/velollm.conf"}
    script = files["velollm-serve.sh"]
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    assert exec_line == ("exec velollm serve --model qwen3:32b --max-model-len 65536 --device cuda --dtype bfloat16 "
                         '--max-num-seqs 256 --gpu-memory-utilization 0.9 "$@"')
    assert "# --max-model-len 65536: the KV room (500,000 tokens) is less than" in script
    assert "CUDA graphs stay on" in script
    assert "#   llama3.1:8b: --model llama3.1:8b --max-model-len 131072" in script and "llava" not in script
    env = files["ollama.env"].splitlines()
    for name in ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE",
                 "OLLAMA_KEEP_ALIVE"):
        i = next(i for i, line in enumerate(env) if line.startswith(f"{name}="))
        assert env[i - 1].startswith("# ") and len(env[i - 1]) > 20  # each value preceded by its reason
    dropin = files["ollama.service.d/velollm.conf"]
    assert "[Service]" in dropin and 'Environment="OLLAMA_NUM_PARALLEL=8"' in dropin


def test_script_runs_in_a_shell_and_quotes_names(tmp_path):
    fits = [_fit("hf.co/org/Model's:Q4", 4096, 4096)]
    cpu = HardwareInfo("x", 4, 16 << 30, 8 << 30)
    script = settings_files(recommend(cpu), ollama_settings(cpu), fits, "hf.co/org/Model's:Q4", "cpu")[0].text
    # the script is valid sh: run it with `velollm` replaced by echo, and see the arguments arrive whole
    path = tmp_path / "s.sh"
    path.write_text(script.replace("exec velollm serve", "exec printf '%s\\n'"))
    out = subprocess.run(["sh", str(path), "--port", "9000"], capture_output=True, text=True, check=True).stdout
    args = out.splitlines()
    assert args[:2] == ["--model", "hf.co/org/Model's:Q4"] and args[-2:] == ["--port", "9000"]
    assert "--kv-cache-memory" in args and args[args.index("--device") + 1] == "cpu"


def test_optimize_command_writes_files(tmp_path):
    env = {"OLLAMA_MODELS": str(tmp_path / "none"), "HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "velollm.cli", "optimize", "--write", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "velollm-serve.sh").stat().st_mode & 0o111
    assert (tmp_path / "out" / "ollama.service.d" / "velollm.conf").read_text().count("Environment=") == 5
    assert "wrote" in out.stderr and "systemctl daemon-reload" in out.stderr
    printed = subprocess.run([sys.executable, "-m", "velollm.cli", "optimize"], capture_output=True, text=True,
                             timeout=60, env=env)
    assert printed.returncode == 0 and "==> ollama.env" in printed.stdout and "exec velollm serve" in printed.stdout


def test_check_compares_the_kv_cache_dtype_where_fp8_is_advised():
    from velollm.commands.optimize_check import compare

    ada = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "RTX 4060 Ti", 16 << 30, (8, 9)),))
    served = {"demo": {"device": "cuda:0", "dtype": "bfloat16", "max_num_seqs": "128", "cuda_graphs": "true",
                       "kv_cache_dtype": "bfloat16"}}
    [kv] = [f for f in compare(served, recommend(ada), []) if f.setting == "kv_cache_dtype"]
    assert (kv.server, kv.advised, kv.ok) == ("bfloat16", "float8_e4m3fn", False)
    served["demo"]["kv_cache_dtype"] = "float8_e4m3fn"
    assert all(f.ok for f in compare(served, recommend(ada), []))
    assert not [f for f in compare(served, recommend(H100), []) if f.setting == "kv_cache_dtype"]  # not advised


def test_check_compares_async_scheduling_only_where_advised():
    from dataclasses import replace

    from velollm.commands.optimize_check import compare, served_settings
    from velollm.commands.client import Sample
    from velollm.hw.recommend import Setting

    samples = [Sample("velollm_engine_info", {"model": "demo", "device": "cuda:0", "dtype": "bfloat16",
                                              "cuda_graphs": "true", "async_scheduling": "false"}, 1.0)]
    served = served_settings(samples)
    assert served["demo"]["async_scheduling"] == "false"
    assert not [f for f in compare(served, recommend(H100), []) if f.setting == "async_scheduling"]  # no advice
    advised = replace(recommend(H100), settings=(*recommend(H100).settings, Setting("--async-scheduling", "", "x")))
    [found] = [f for f in compare(served, advised, []) if f.setting == "async_scheduling"]
    assert (found.server, found.advised, found.ok) == ("false", "true", False)
