"""A store model whose GGUF has no chat template chats through its TEMPLATE layer (a Go template), as in
Ollama: the prompt VeloLLM renders is Go's output for that conversation (tests/fixtures/go_template)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import start_live, stop_live

from .test_ollama_store import make_store
from .tiny_gguf import write_gguf

FIXTURES = Path(__file__).parents[1] / "fixtures" / "go_template"
GOLDENS = {g["name"]: g["output"] for g in json.loads((FIXTURES / "goldens.json").read_text())}
CHATML = (FIXTURES / "library" / "chatml.gotmpl").read_bytes()
QUESTION = "Why is the sky blue?"
CASES = {c["name"]: c for c in json.loads((FIXTURES / "cases.json").read_text())}
TOOLS_CASE = CASES["tools-llama3.1-style/store-tools-call-result"]
FIM_CODER = (FIXTURES / "library" / "fim-coder.gotmpl").read_bytes()
FIM_CASE = CASES["lang/fim-coder-insert"]["data"]


@pytest.fixture(scope="module")
def layer_server(fixtures, tmp_path_factory):
    root = tmp_path_factory.mktemp("go-template")
    base = fixtures.model("llama", "F32")
    tok = dataclasses.replace(base.tok, chat_template=None)
    gguf = write_gguf(root / "no-template.gguf", base.spec, base.sd, tok, "F32")
    make_store(root / "models", gguf, template=CHATML)
    make_store(root / "models", gguf, ("registry.ollama.ai", "library", "tooly", "latest"),
               template=TOOLS_CASE["template"].encode())
    make_store(root / "models", gguf, ("registry.ollama.ai", "library", "coder", "latest"), template=FIM_CODER)
    # a registry coder model's GGUF has a jinja chat template too: jinja renders its chats, the layer its inserts
    make_store(root / "models", base.path, ("registry.ollama.ai", "library", "coder-jinja", "latest"),
               template=FIM_CODER)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OLLAMA_MODELS", str(root / "models"))
        proc, url, _log = start_live(root, "--model", "tiny", "--model", "tooly", "--model", "coder",
                                     "--model", "coder-jinja", "--max-model-len", "1024")
    try:
        yield url, gguf
    finally:
        stop_live(proc)


def _num_tokens(gguf: Path, text: str) -> int:
    """Tokens of Go's output as Ollama's runner counts them: tokenized with llama.cpp's add_special (the BOS)."""
    from velollm.engine.loader.gguf_tokenizer import tokenizer_from_gguf

    return len(tokenizer_from_gguf(gguf).encode(text, add_special_tokens=True))


@pytest.mark.parametrize("tok", ["llama-bpe", "spm", "qwen2"])
def test_a_go_rendered_prompt_is_tokenized_with_the_bos_as_ollamas_runner_does(fixtures, tok):
    """Ollama's templates write no BOS (llama3's starts at <|start_header_id|>): its runner tokenizes the
    rendered prompt with add_special, so the GGUF's add_bos_token puts the BOS first. VeloLLM's prompt ids
    must be those (they had no BOS: a llama3 store model read its chats without <|begin_of_text|>)."""
    from velollm.engine.loader.gguf_tokenizer import tokenizer_from_gguf
    from velollm.engine.text.go_template.chat import render_go_chat

    tokenizer = tokenizer_from_gguf(fixtures.vocab_model(tok))
    tokenizer.chat_template = None
    template = (FIXTURES / "library" / "llama3-instruct.gotmpl").read_text()
    tokenizer.go_template = template
    messages = [{"role": "system", "content": "You are tiny."}, {"role": "user", "content": QUESTION}]
    expected = tokenizer.encode(render_go_chat(template, messages), add_special_tokens=True)
    assert tokenizer.encode_chat(messages) == expected
    bos = tokenizer.bos_token_id
    assert (expected[0] == bos) == (tok != "qwen2")  # qwen2's GGUF asks for no BOS, Ollama adds none


def test_rendered_prompt_is_gos(layer_server):
    url, _ = layer_server
    golden = GOLDENS["chatml/store-chat"]
    assert golden.startswith("<|im_start|>system\nYou are tiny.<|im_end|>\n")
    golden = "<|begin_of_text|>" + golden  # the BOS Ollama's runner adds (add_bos_token), first
    body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "_debug_render_only": True}
    r = httpx.post(f"{url}/api/chat", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["_debug_info"]["rendered_template"] == golden
    # /api/generate (not raw) renders the prompt as one user message after the SYSTEM layer, as Ollama does.
    body = {"model": "tiny", "prompt": QUESTION, "_debug_render_only": True}
    r = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["_debug_info"]["rendered_template"] == golden, r.text


def test_ollama_and_openai_clients_chat_through_the_layer(layer_server):
    url, gguf = layer_server
    expected = _num_tokens(gguf, GOLDENS["chatml/store-chat"])
    chat = ollama.Client(host=url).chat(model="tiny", messages=[{"role": "user", "content": QUESTION}],
                                         options={"num_predict": 4, "temperature": 0})
    assert chat.prompt_eval_count == expected and chat.eval_count == 4
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    completion = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=4, temperature=0)
    assert completion.usage.prompt_tokens == expected
    assert completion.choices[0].message.content == chat.message.content
    shown = ollama.Client(host=url).show("tiny")
    assert shown.template == CHATML.decode()
    assert shown.capabilities == ["completion"]  # chatml names neither .Tools nor a thinking marker


def test_a_template_that_fails_is_a_400_in_each_format(layer_server):
    url, _ = layer_server
    bad = {"model": "tiny", "prompt": "x", "template": "{{ .Prompt | nosuch }}"}
    r = httpx.post(f"{url}/api/generate", json=bad, timeout=60)
    assert r.status_code == 400 and 'function "nosuch" not defined' in r.json()["error"]
    generated = httpx.post(f"{url}/api/generate", timeout=60, json={
        "model": "tiny", "prompt": QUESTION, "system": "You are tiny.", "_debug_render_only": True,
        "template": CHATML.decode()})
    assert generated.json()["_debug_info"]["rendered_template"].endswith(GOLDENS["chatml/store-chat"])


def test_tools_and_tool_results_reach_the_template(layer_server):
    url, gguf = layer_server
    golden = GOLDENS["tools-llama3.1-style/store-tools-call-result"]
    messages = TOOLS_CASE["messages"][1:]  # the store's SYSTEM layer comes first, as on Ollama
    body = {"model": "tooly", "messages": messages, "tools": TOOLS_CASE["tools"], "_debug_render_only": True}
    r = httpx.post(f"{url}/api/chat", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["_debug_info"]["rendered_template"] == "<|begin_of_text|>" + golden
    assert "tools" in ollama.Client(host=url).show("tooly").capabilities
    call = messages[1]["tool_calls"][0]
    openai_messages = [messages[0], {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function",
         "function": {"name": call["function"]["name"], "arguments": json.dumps(call["function"]["arguments"])}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    completion = openai.OpenAI(base_url=f"{url}/v1", api_key="x").chat.completions.create(
        model="tooly", messages=openai_messages, tools=TOOLS_CASE["tools"], max_tokens=2, temperature=0)
    assert completion.usage.prompt_tokens == _num_tokens(gguf, golden)


def test_tools_on_a_layer_without_tools_are_ollamas_400_in_each_format(layer_server):
    """Ollama refuses tools for a model whose TEMPLATE names no .Tools (its capability check, the full name first);
    VeloLLM took them and put a fallback system message through the layer, which chatml's legacy branch and
    many layers drop. /v1 answers the same 400 in OpenAI's shape, as Ollama's compatibility layer does."""
    url, _ = layer_server
    tools = TOOLS_CASE["tools"]
    messages = [{"role": "user", "content": QUESTION}]
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=url).chat(model="tiny", messages=messages, tools=tools)
    assert e.value.status_code == 400
    assert e.value.error == "registry.ollama.ai/library/tiny:latest does not support tools"
    assert "tools" not in ollama.Client(host=url).show("tiny").capabilities
    with pytest.raises(ollama.ResponseError) as e:  # Ollama checks before its load-only answer to no messages
        ollama.Client(host=url).chat(model="tiny", messages=[], tools=tools)
    assert e.value.status_code == 400 and e.value.error.endswith("does not support tools")
    with pytest.raises(openai.BadRequestError) as oe:
        openai.OpenAI(base_url=f"{url}/v1", api_key="x").chat.completions.create(
            model="tiny", messages=messages, tools=tools, max_tokens=2)
    assert oe.value.body["message"] == "registry.ollama.ai/library/tiny:latest does not support tools"
    assert oe.value.body["type"] == "invalid_request_error"
    # the same chat without tools runs; a layer naming .Tools takes them
    assert ollama.Client(host=url).chat(model="tiny", messages=messages, options={"num_predict": 1}).done
    assert ollama.Client(host=url).chat(model="tooly", messages=messages, tools=tools,
                                        options={"num_predict": 1}).done


def test_a_store_model_without_a_template_layer_renders_with_ollamas_default(fixtures, tmp_path):
    """A store model with neither a TEMPLATE layer nor a jinja template (a base model `ollama create`d from a bare
    GGUF) renders as Ollama renders it, with its default `{{ .Prompt }}`: /api/generate and /api/chat were a 400
    "this model has no chat template" while /api/show said `{{ .Prompt }}`. A GGUF with a jinja template keeps it."""
    from velollm.engine.loader.resolve import resolve_model

    base = fixtures.model("llama", "F32")
    bare = write_gguf(tmp_path / "bare.gguf", base.spec, base.sd, dataclasses.replace(base.tok, chat_template=None),
                      "F32")
    manifest = make_store(tmp_path / "models", bare)
    stored = json.loads(manifest.read_text())
    stored["layers"] = [la for la in stored["layers"] if not la["mediaType"].endswith(".template")]
    manifest.write_text(json.dumps(stored))
    make_store(tmp_path / "models", base.path, ("registry.ollama.ai", "library", "jinja", "latest"))
    jinja_manifest = manifest.parents[1] / "jinja" / "latest"
    jinja = json.loads(jinja_manifest.read_text())
    jinja["layers"] = [la for la in jinja["layers"] if not la["mediaType"].endswith(".template")]
    jinja_manifest.write_text(json.dumps(jinja))

    source = resolve_model("tiny", ollama_models=tmp_path / "models", device="cpu")
    tokenizer = source.load_tokenizer()
    assert source.info.template is None  # /api/show and a create from it see no layer, as in Ollama
    messages = [{"role": "system", "content": "You are tiny."}, {"role": "user", "content": QUESTION}]
    assert tokenizer.apply_chat_template(messages) == "<|begin_of_text|>" + QUESTION  # legacy: the last .Prompt
    kept = resolve_model("jinja", ollama_models=tmp_path / "models", device="cpu").load_tokenizer()
    assert kept.chat_template == base.tok.chat_template and kept.go_template is None


@pytest.mark.parametrize("model", ["coder", "coder-jinja"])
def test_fill_in_the_middle_renders_with_the_layer_as_ollama_does(layer_server, model):
    """/api/generate with a `suffix` (Continue and other editors' completions through Ollama): Ollama's insert
    capability, the model's TEMPLATE layer naming .Suffix, rendered over Prompt and Suffix alone (no SYSTEM
    layer, no history) whether or not a jinja template renders the model's chats."""
    url, gguf = layer_server
    golden = "<|begin_of_text|>" + GOLDENS["lang/fim-coder-insert"]  # the BOS Ollama's runner adds, first
    body = {"model": model, "prompt": FIM_CASE["Prompt"], "suffix": FIM_CASE["Suffix"], "system": "ignored",
            "_debug_render_only": True}
    r = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["_debug_info"]["rendered_template"] == golden, r.text
    client = ollama.Client(host=url)
    answer = client.generate(model=model, prompt=FIM_CASE["Prompt"], suffix=FIM_CASE["Suffix"],
                             options={"num_predict": 3, "temperature": 0})
    assert answer.prompt_eval_count == _num_tokens(gguf, GOLDENS["lang/fim-coder-insert"]) and answer.eval_count == 3
    raw = client.generate(model=model, prompt=GOLDENS["lang/fim-coder-insert"], raw=True,
                          options={"num_predict": 3, "temperature": 0})
    assert answer.response == raw.response  # the same prompt ids as the rendered text sent raw
    # Ollama's /v1/completions takes a suffix the same way
    completion = openai.OpenAI(base_url=f"{url}/v1", api_key="x").completions.create(
        model=model, prompt=FIM_CASE["Prompt"], suffix=FIM_CASE["Suffix"], max_tokens=3, temperature=0)
    assert completion.usage.prompt_tokens == answer.prompt_eval_count
    assert completion.choices[0].text == answer.response
    shown = client.show(model).capabilities
    assert "insert" in shown and shown.index("insert") == shown.index("completion") + 1 + ("tools" in shown)


def test_a_suffix_for_a_model_whose_template_has_none_is_ollamas_400(layer_server):
    url, _ = layer_server
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=url).generate(model="tiny", prompt="def f(", suffix="return 1")
    assert e.value.status_code == 400 and e.value.error == '"tiny" does not support insert'
    assert "insert" not in ollama.Client(host=url).show("tiny").capabilities
    with pytest.raises(openai.BadRequestError) as e:
        openai.OpenAI(base_url=f"{url}/v1", api_key="x").completions.create(
            model="tiny", prompt="def f(", suffix="return 1", max_tokens=3)
    assert e.value.body["param"] == "suffix" and "fill-in-the-middle" in e.value.body["message"]
    # a request's own template does not make up for the model's (Ollama checks the model's capabilities)
    r = httpx.post(f"{url}/api/generate", timeout=60, json={
        "model": "tiny", "prompt": "def f(", "suffix": "return 1", "template": FIM_CODER.decode()})
    assert r.status_code == 400 and "does not support insert" in r.json()["error"]
