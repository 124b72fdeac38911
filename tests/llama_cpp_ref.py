"""llama.cpp as a test reference: in a child process, with plain CPU buffers.

llama.cpp repacks quantized weights into "extra" CPU buffer types for the processor it runs on (AMX on
Sapphire Rapids and later, AVX-512 / NEON variants); on the tiny test fixtures those repacked kernels have
crashed (segfault in `decode`), which took the whole pytest process down. Every reference here loads with
`use_extra_bufts = False`, and runs in a child process, so a crash that remains fails one test with the
signal instead of ending the suite.

    python -m tests.llama_cpp_ref scores MODEL.gguf N_CTX STEPS OUT.npz < prompt ids (JSON)
    python -m tests.llama_cpp_ref server ARGS...   (llama_cpp.server with plain buffers)
    python -m tests.llama_cpp_ref params MODEL.gguf  (prints the use_extra_bufts a Llama() loads with)
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


class ReferenceCrashed(RuntimeError):
    """The llama.cpp child process died of a signal or failed."""


def plain_buffers() -> None:
    """Every model llama-cpp-python loads in this process uses plain CPU buffers (no repacking).

    `Llama()` offers no argument for it; it builds its params from `llama_model_default_params()`, looked up
    on the module at call time, so that is where the setting goes (in the child process only).
    """
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def plain():
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = plain


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_child(argv: list[str], stdin: str = "") -> str:
    """Runs argv; a signal or a non-zero exit is a ReferenceCrashed naming it (stderr's tail included)."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=child_env(), timeout=TIMEOUT_S)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ReferenceCrashed(f"llama.cpp reference crashed with {name}: {proc.stderr[-2000:]}")
    if proc.returncode != 0:
        raise ReferenceCrashed(f"llama.cpp reference failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def reference_scores(path: Path | str, prompt: list[int], *, n_ctx: int, greedy_steps: int = 0,
                     ) -> tuple[np.ndarray, list[int]]:
    """llama.cpp's logits for every position of the prompt, then `greedy_steps` greedy tokens (f32 KV cache).

    Returns (scores [len(prompt) + greedy_steps, vocab], the greedy tokens).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.npz"
        run_child([sys.executable, "-m", "tests.llama_cpp_ref", "scores", str(path), str(n_ctx), str(greedy_steps),
                   str(out)], stdin=json.dumps(prompt))
        with np.load(out) as data:
            return data["scores"], data["tokens"].tolist()


def _scores(path: str, n_ctx: int, steps: int, out: str) -> None:
    import llama_cpp

    prompt = json.loads(sys.stdin.read())
    ref = llama_cpp.Llama(path, logits_all=True, n_ctx=n_ctx, n_threads=2, seed=0, type_k=0, type_v=0,
                          verbose=False)  # ggml type 0: an f32 KV cache, so only the matmuls differ
    ref.eval(prompt)
    tokens = []
    for _ in range(steps):
        tokens.append(int(np.argmax(ref.scores[ref.n_tokens - 1])))
        ref.eval([tokens[-1]])
    np.savez(out, scores=np.array(ref.scores[: ref.n_tokens], dtype=np.float64), tokens=np.array(tokens))


def loaded_params(path: str) -> dict[str, bool]:
    import llama_cpp

    ref = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    return {"use_extra_bufts": bool(ref.model_params.use_extra_bufts)}


def main(argv: list[str]) -> None:
    plain_buffers()
    command, args = argv[0], argv[1:]
    if command == "scores":
        _scores(args[0], int(args[1]), int(args[2]), args[3])
    elif command == "server":
        sys.argv = ["llama_cpp.server", *args]
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
    elif command == "params":
        print(json.dumps(loaded_params(args[0])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
