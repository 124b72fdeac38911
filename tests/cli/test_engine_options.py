"""The shared engine flags (--kv-cache-dtype, --async-scheduling, --[no-]enable-prefix-caching) on every
command that builds an engine: parsed alike, $OLLAMA_KV_CACHE_TYPE mapped alike, and reaching the engine of
`generate` (a subprocess) and of the server `run` starts in its process when none answers (read back from its
/metrics)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import httpx
import pytest

from tests.serve_process import REPO, free_port
from velollm.cli import build_parser
from velollm.commands import run as run_command
from velollm.commands.engine_options import engine_flags, engine_options
from velollm.config import EngineConfig, KernelSwitches

from .conftest import cli_env

ENGINE_COMMANDS = {"serve": [], "run": ["demo"], "generate": ["hi"], "benchmark": []}


@pytest.mark.parametrize("command", ENGINE_COMMANDS)
def test_every_engine_command_takes_the_flags(command):
    parser = build_parser()
    extra = ENGINE_COMMANDS[command]
    args = parser.parse_args([command, *extra, "--kv-cache-dtype", "fp8_e4m3", "--async-scheduling",
                              "--no-enable-prefix-caching"])
    config = EngineConfig(**engine_options(args, {}))
    assert (config.kv_cache_dtype, config.async_scheduling, config.enable_prefix_caching) == ("fp8", True, False)
    assert engine_flags(args) == ["--kv-cache-dtype", "fp8_e4m3", "--async-scheduling", "--no-enable-prefix-caching"]
    default = parser.parse_args([command, *extra])
    assert engine_options(default, {}) == {"kv_cache_dtype": "auto", "async_scheduling": False,
                                           "enable_prefix_caching": True, "kernel_switches": KernelSwitches()}
    assert engine_flags(default) == []
    assert engine_options(parser.parse_args([command, *extra, "--enable-prefix-caching"]), {})["enable_prefix_caching"]
    assert engine_options(default, {"VELOLLM_SILU_DOWN_GEMV": "1"})["kernel_switches"].silu_down_gemv
    assert engine_options(default, {"OLLAMA_KV_CACHE_TYPE": "q8_0"})["kv_cache_dtype"] == "fp8"
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args([command, *extra, "--kv-cache-dtype", "int4"])


@pytest.mark.parametrize("command", ["serve", "generate"])
def test_a_bad_kernel_switch_stops_the_command_at_start(tmp_path, command):
    """Read where the command starts (engine_options), not in a forward step: no server comes up, no request
    fails later; the message names the variable and its values."""
    env = cli_env("http://127.0.0.1:1", tmp_path, VELOLLM_CACHE=str(tmp_path / "cache"),
                  VELOLLM_PREFILL_ATTENTION="flash")
    args = ["--port", str(free_port()), "--no-upstream"] if command == "serve" else ["--device", "cpu", "hello"]
    out = subprocess.run([sys.executable, "-m", "velollm.cli", command, *args], check=False, capture_output=True,
                         text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode in (1, 2), out.stderr
    assert "$VELOLLM_PREFILL_ATTENTION must be one of auto, varlen, paged" in out.stderr and "'flash'" in out.stderr
    assert not (tmp_path / "cache").exists()  # nothing loaded (not even the demo model generated)


def test_generate_runs_with_an_fp8_cache_and_async_scheduling(tmp_path):
    env = cli_env("http://127.0.0.1:1", tmp_path, VELOLLM_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "velollm.cli", "generate", "--device", "cpu", "--max-tokens", "4",
                          "--kv-cache-dtype", "fp8", "--async-scheduling", "hello"],
                         check=False, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    assert "float8_e4m3fn" in out.stderr  # the line that sizes the KV cache
    assert "async scheduling" in out.stderr
    plain = subprocess.run([sys.executable, "-m", "velollm.cli", "generate", "--device", "cpu", "--max-tokens", "4",
                            "hello"], check=False, capture_output=True, text=True, timeout=300, cwd=REPO,
                           env={**env, "OLLAMA_KV_CACHE_TYPE": "q8_0"})
    assert plain.returncode == 0, plain.stderr
    assert "float8_e4m3fn" in plain.stderr and "async scheduling" not in plain.stderr


def test_run_passes_the_flags_to_the_server_it_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("VELOLLM_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("VELOLLM_CACHE", str(tmp_path / "cache"))
    args = build_parser().parse_args(["run", "demo", "--kv-cache-dtype", "fp8", "--async-scheduling"])
    assert engine_flags(args) == ["--kv-cache-dtype", "fp8", "--async-scheduling"]
    err = io.StringIO()
    client, local = run_command._connect("demo", err, engine_flags(args))
    try:
        metrics = httpx.get(f"{client.base_url}/metrics", timeout=10).text
        [info] = [line for line in metrics.splitlines() if line.startswith("velollm_engine_info{")]
        assert 'kv_cache_dtype="float8_e4m3fn"' in info
        assert 'async_scheduling="true"' in info
        # A server that answers keeps its own settings: run says so instead of silently dropping the flags.
        monkeypatch.setenv("VELOLLM_HOST", client.base_url)
        err2 = io.StringIO()
        other, none = run_command._connect("demo", err2, engine_flags(args))
        other.close()
        assert none is None and "--kv-cache-dtype fp8 --async-scheduling: not applied" in err2.getvalue()
    finally:
        client.close()
        local.stop()

