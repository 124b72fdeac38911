"""A live `velollm serve` with a test-only fault hook (tests/hooks/<hook>/sitecustomize.py) that a flag file arms,
and a copy of its pinned demo model that loads on demand (so both kinds of model meet the fault)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import openai

from tests.serve_process import REPO, start_serve, stop_serve

HOOKS = Path(__file__).resolve().parents[1] / "hooks"


@dataclass
class HookedServer:
    proc: subprocess.Popen
    url: str
    log: Path
    flag: Path  # touch it to arm the fault, unlink it to clear it
    on_demand: str  # the demo model's copy, by path
    client: openai.OpenAI


def start_hooked(tmp_path: Path, hook: str, flag_env: str) -> HookedServer:
    """The server with tests/hooks/`hook` on its path and $`flag_env` naming the flag file; stop_serve(.proc)."""
    flag = tmp_path / "fault"
    path = os.pathsep.join(p for p in (str(HOOKS / hook), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # --no-turn-prefill: the hooks break the first step after the flag appears, and a turn prefill (the next turn's
    # prefix, computed after an answer) is a step the test does not wait for: it broke the engine with no request.
    proc, url, log, _ = start_serve(tmp_path, "--max-model-len", "256", "--kv-cache-memory", "16MiB",
                                    "--no-upstream", "--no-turn-prefill", env={"PYTHONPATH": path, flag_env: str(flag)})
    try:
        [config] = (tmp_path / "cache").rglob("config.json")  # the pinned demo's folder: a copy loads on demand
        folder = tmp_path / "on-demand"
        shutil.copytree(config.parent, folder)
    except BaseException:
        stop_serve(proc)
        raise
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    return HookedServer(proc, url, log, flag, str(folder), client)
