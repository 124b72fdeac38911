"""llama.cpp's embeddings of a GGUF file, computed in a subprocess.

A subprocess, so that a crash in llama.cpp (its repacked CPU buffers segfault on some AMX CPUs)
fails one test instead of killing pytest; plain CPU buffers (`use_extra_bufts = False`) avoid it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = r"""
import json, sys
import llama_cpp
import llama_cpp.llama_cpp as low

_defaults = low.llama_model_default_params
def _plain_buffers():
    params = _defaults()
    params.use_extra_bufts = False
    return params
low.llama_model_default_params = _plain_buffers

path, texts = sys.argv[1], json.loads(sys.stdin.read())
llm = llama_cpp.Llama(path, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, verbose=False)
out = {"tokens": [llm.tokenize(t.encode(), add_bos=True, special=False) for t in texts],
       "vectors": [llm.embed(t, normalize=False) for t in texts]}
print(json.dumps(out))
"""


def llama_cpp_embed(path: Path, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
    """(token ids, un-normalised pooled vectors) as llama.cpp computes them."""
    pytest.importorskip("llama_cpp")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], input=json.dumps(texts), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"llama.cpp reference failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["tokens"], np.asarray(out["vectors"], dtype=np.float32)
