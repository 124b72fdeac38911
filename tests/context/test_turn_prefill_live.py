"""The next turn's prefix prefilled in the background, through the official openai and ollama clients against
`velollm serve` on tiny random models with the real Qwen3 and Llama 3.1 tokenizers and chat templates.

Each template rewrites the previous answer in the next turn: Qwen3 drops its `<think>` part, Llama 3.1 trims
it (an answer that starts with whitespace then starts with other ids; one that only ends with whitespace loses
its last block or two at most, as the ids before the trimmed end are the same). Without the background prefill the next turn's prefix-cache hit ends where the rewritten answer starts;
with it, it covers the whole previous conversation (to the last full block), and the answer is the same as
with prefetch off (greedy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.serve_process import start_serve, stop_serve
from velollm.engine.text.tokenizer import Tokenizer
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_prompt import to_template_messages

BLOCK = 16
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
QUESTION = ("The river ran quietly past the old mill where the miller counted sacks of grain. " * 6
            + "Weather in Paris for 3 days, as JSON.")
SERVE = ("--max-model-len", "2048", "--kv-cache-memory", "64MiB", "--device", "cpu")


def build_tiny_llama31(folder: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer random Llama with Llama 3.1's real tokenizer and chat template."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009])
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_llama31(llama31_tokenizer_folder, tmp_path_factory) -> Path:
    return build_tiny_llama31(tmp_path_factory.mktemp("llama31") / "tiny-llama31", llama31_tokenizer_folder)


def serve_pair(folder: Path, name: str, tmp: Path):
    """The same model served twice: with the background prefill (the default) and with prefetch off."""
    handles, procs = [], []
    try:
        for label, extra in (("on", ()), ("off", ("--no-prefetch",))):
            (tmp / label).mkdir()
            proc, url, log, _ = start_serve(tmp / label, "--model", str(folder), "--served-model-name", name,
                                            *SERVE, *extra)
            procs.append(proc)
            handles.append(ServerHandle("live", url, model=name, log=log))
        yield handles
    finally:
        for proc in procs:
            stop_serve(proc)


@pytest.fixture(scope="module")
def qwen3_pair(tiny_qwen3, tmp_path_factory):
    yield from serve_pair(tiny_qwen3, "qwen3-tiny", tmp_path_factory.mktemp("turn-prefill-qwen3"))


@pytest.fixture(scope="module")
def llama_pair(tiny_llama31, tmp_path_factory):
    yield from serve_pair(tiny_llama31, "llama31-tiny", tmp_path_factory.mktemp("turn-prefill-llama"))


def oai(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


def prefilled(server: ServerHandle, before: float) -> float:
    """Waits for the background prefill of the answer just given (the user is typing meanwhile)."""
    done = server.wait_metric("velollm_turn_prefills_total", lambda v: v > before, timeout=60,
                              model=server.model, outcome="done")
    assert done == before + 1, server.log.read_text()[-3000:]
    return done


def history_tokens(folder: Path, messages: list[dict], header: str, tools: list[dict] | None = None) -> int:
    """Tokens of the next prompt before its last user turn's `header`: the previous conversation."""
    tokenizer = Tokenizer.from_folder(folder)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
    return len(tokenizer.encode(text[:text.rindex(header)], add_special_tokens=False))


def openai_turns(server: ServerHandle, first: dict, answer_of,
                 second: dict | None = None) -> tuple[list[dict], str, int]:
    """Turn 1 (`first`: the request's extra arguments), the prefill waited for, then turn 2 (greedy; `second`:
    its extra arguments): (turn 2's messages, its answer, its cached tokens)."""
    client = oai(server)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}]
    before = server.metric("velollm_turn_prefills_total", model=server.model, outcome="done")
    r1 = client.chat.completions.create(model=server.model, messages=messages, **first)
    prefilled(server, before)
    turn2 = messages + [{"role": "assistant", "content": answer_of(r1.choices[0].message)},
                        {"role": "user", "content": "And in London?"}]
    r2 = client.chat.completions.create(model=server.model, messages=turn2, max_tokens=12, temperature=0,
                                        **(second or {}))
    return turn2, r2.choices[0].message.content, r2.usage.prompt_tokens_details.cached_tokens


def test_qwen3_thinking_answer_is_prefilled_without_its_thinking(qwen3_pair, tiny_qwen3):
    on, off = qwen3_pair
    first = {"max_tokens": 160, "seed": 4,
             "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}}
    turn2, answer, cached = openai_turns(on, first, lambda m: m.content)
    assert "<think>" not in turn2[2]["content"] and json.loads(turn2[2]["content"])
    history = history_tokens(tiny_qwen3, turn2, "<|im_start|>user")
    assert cached >= history // BLOCK * BLOCK
    r_off = oai(off).chat.completions.create(model=off.model, messages=turn2, max_tokens=12, temperature=0)
    assert r_off.choices[0].message.content == answer  # greedy: the same answer as with prefetch off
    assert on.metric("velollm_turn_prefill_tokens_total", model=on.model) > 0


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city for some days",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]


def test_qwen3_answer_with_tools_given_is_prefilled(qwen3_pair, tiny_qwen3):
    """Qwen3's template renders the tools in the system turn, from the tools alone: the next turn, sent with the
    same tools, starts with the same block, and an answer without calls is prefilled as any other."""
    on, off = qwen3_pair
    [tool_call] = Tokenizer.from_folder(tiny_qwen3).encode("<tool_call>", add_special_tokens=False)
    no_thinking = {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    first = {"max_tokens": 40, "temperature": 0, "tools": TOOLS, "logit_bias": {str(tool_call): -100},
             **no_thinking}
    second = {"tools": TOOLS, **no_thinking}
    turn2, answer, cached = openai_turns(on, first, lambda m: (m.tool_calls is None and m.content), second)
    assert turn2[2]["content"]  # an answer, no calls
    history = history_tokens(tiny_qwen3, turn2, "<|im_start|>user", tools=TOOLS)
    assert "# Tools" in Tokenizer.from_folder(tiny_qwen3).apply_chat_template(turn2, tools=TOOLS)
    assert cached >= history // BLOCK * BLOCK
    r_off = oai(off).chat.completions.create(model=off.model, messages=turn2, max_tokens=12, temperature=0,
                                             **second)
    assert r_off.choices[0].message.content == answer  # greedy: the same answer as with prefetch off


def test_qwen3_answer_with_tool_calls_is_prefilled_up_to_their_result(qwen3_pair, tiny_qwen3):
    """An answer with calls was not prefilled: its next turn is the calls' result, and Qwen3 writes the calls
    back otherwise than generated (no empty `<think>` block before them). Prefilled as the client sends them back,
    then the result's header, the next turn's cache hit covers the conversation up to the result."""
    on, off = qwen3_pair
    no_thinking = {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    client = oai(on)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}]
    before = on.metric("velollm_turn_prefills_total", model=on.model, outcome="done")
    r1 = client.chat.completions.create(model=on.model, messages=messages, max_tokens=60, temperature=0,
                                        tools=TOOLS, tool_choice="required", **no_thinking)
    [call] = r1.choices[0].message.tool_calls
    prefilled(on, before)
    answer = r1.choices[0].message
    turn2 = messages + [{**answer.model_dump(exclude_none=True), "content": answer.content or ""},  # as the server reads
                        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}]
    r2 = client.chat.completions.create(model=on.model, messages=turn2, max_tokens=12, temperature=0, tools=TOOLS,
                                        **no_thinking)
    rendered = to_template_messages(turn2, ToolFamily.HERMES)  # the arguments as objects, as the server renders
    history = history_tokens(tiny_qwen3, rendered, "<|im_start|>user", tools=TOOLS)  # up to the result's header
    assert "<tool_call>" in Tokenizer.from_folder(tiny_qwen3).apply_chat_template(rendered, tools=TOOLS)
    assert r2.usage.prompt_tokens_details.cached_tokens >= history // BLOCK * BLOCK
    r_off = oai(off).chat.completions.create(model=off.model, messages=turn2, max_tokens=12, temperature=0,
                                             tools=TOOLS, **no_thinking)
    assert r_off.choices[0].message.content == r2.choices[0].message.content  # greedy, as with prefetch off


def test_qwen3_ollama_chat_thinking_answer_is_prefilled(qwen3_pair, tiny_qwen3):
    on, off = qwen3_pair
    client = ollama.Client(host=on.url, timeout=120)
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": QUESTION}]
    before = on.metric("velollm_turn_prefills_total", model=on.model, outcome="done")
    r1 = client.chat(model=on.model, messages=messages, think=True, format=SCHEMA,
                     options={"seed": 1, "num_predict": 160})
    assert r1.message.thinking
    prefilled(on, before)
    turn2 = messages + [{"role": "assistant", "content": r1.message.content, "thinking": r1.message.thinking},
                        {"role": "user", "content": "And in London?"}]
    hits = on.metric("velollm_prefix_cache_hits_total", model=on.model)
    r2 = client.chat(model=on.model, messages=turn2, think=False, options={"temperature": 0, "num_predict": 12})
    cached = on.metric("velollm_prefix_cache_hits_total", model=on.model) - hits
    # think=False renders the generation prompt otherwise, not the history: the history is cached whole
    assert cached >= history_tokens(tiny_qwen3, turn2, "<|im_start|>user") // BLOCK * BLOCK
    r_off = ollama.Client(host=off.url, timeout=120).chat(model=off.model, messages=turn2, think=False,
                                                          options={"temperature": 0, "num_predict": 12})
    assert r_off.message.content == r2.message.content


def test_llama31_answer_starting_with_whitespace_is_prefilled_trimmed(llama_pair, tiny_llama31):
    on, off = llama_pair
    tokenizer = Tokenizer.from_folder(tiny_llama31)
    [space_dot] = tokenizer.encode(" .", add_special_tokens=False)
    first = {"max_tokens": 40, "temperature": 0, "logit_bias": {str(space_dot): 100}}
    turn2, answer, cached = openai_turns(on, first, lambda m: m.content)
    assert turn2[2]["content"] == " ." * 40  # the template writes it back trimmed: "." then " ." x 39
    history = history_tokens(tiny_llama31, turn2, "<|start_header_id|>user")
    assert cached >= history // BLOCK * BLOCK
    r_off = oai(off).chat.completions.create(model=off.model, messages=turn2, max_tokens=12, temperature=0)
    assert r_off.choices[0].message.content == answer


def test_without_the_background_prefill_the_rewritten_answer_is_a_miss(tiny_llama31, tmp_path):
    """The defect this fixes, shown: prefetch alone reuses the prompt before the rewritten answer only."""
    proc, url, log, _ = start_serve(tmp_path, "--model", str(tiny_llama31), "--served-model-name", "l",
                                    *SERVE, "--no-turn-prefill")
    try:
        server = ServerHandle("live", url, model="l", log=log)
        tokenizer = Tokenizer.from_folder(tiny_llama31)
        [space_dot] = tokenizer.encode(" .", add_special_tokens=False)
        client = oai(server)
        messages = [{"role": "user", "content": QUESTION}]
        r1 = client.chat.completions.create(model="l", messages=messages, max_tokens=40, temperature=0,
                                            logit_bias={str(space_dot): 100})
        turn2 = messages + [{"role": "assistant", "content": r1.choices[0].message.content},
                            {"role": "user", "content": "And in London?"}]
        cached = client.chat.completions.create(model="l", messages=turn2, max_tokens=2, temperature=0) \
            .usage.prompt_tokens_details.cached_tokens
        assert cached < history_tokens(tiny_llama31, turn2, "<|start_header_id|>user") // BLOCK * BLOCK
        assert server.metric("velollm_turn_prefills_total", model="l", outcome="done") == 0
    finally:
        stop_serve(proc)
