"""`from velollm import LLM` and generation need only torch, triton, tokenizers, safetensors, numpy and
jinja2 (what the GPU machines have): the server, GGUF, grammar and proxy libraries stay lazy, and
transformers (a test reference only, not a runtime dependency) is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_SIDE = ["transformers", "starlette", "uvicorn", "httpx", "gguf", "xgrammar", "jsonschema", "json_repair",
               "prometheus_client", "psutil", "rich", "uvloop", "httptools", "openai", "ollama"]


def test_offline_generation_without_server_libraries(llama_folder):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        blocked = set({SERVER_SIDE!r})
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Blocker())
        from velollm import LLM, SamplingParams
        llm = LLM({str(llama_folder)!r}, device="cpu", kv_cache_memory=8 << 20)
        print(len(llm.generate("hello", SamplingParams(max_tokens=4, temperature=0))[0].token_ids))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4"
