"""What Ollama accepts that a stricter reading would refuse, through the official ollama client against a
live `velollm serve` (demo model)."""

from __future__ import annotations

import ollama


def _client(server) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=60)


def test_a_null_option_keeps_its_default(live_server):
    # the python client sends {"temperature": null} as given; Ollama's Options.FromMap skips a null
    client = _client(live_server)
    opts = {"num_predict": 3, "seed": 7, "temperature": None, "top_k": None}
    r = client.generate(model="demo", prompt="hi", options=opts)
    assert r.done and r.eval_count == 3
    c = client.chat(model="demo", messages=[{"role": "user", "content": "hi"}], options=opts)
    assert c.done and c.eval_count == 3
    same = client.generate(model="demo", prompt="hi", options={"num_predict": 3, "seed": 7})
    assert r.response == same.response  # the defaults, as if the keys were absent


def test_consecutive_messages_of_one_role_are_one_message(live_server):
    # Ollama collates before rendering: two system messages in a row are one (the demo template, like
    # Llama 3's, takes one system message and refuses a second)
    client = _client(live_server)
    opts = {"num_predict": 4, "temperature": 0}
    split = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"}, {"role": "user", "content": "how are you?"}])
    joined = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse.\n\nAnswer in French."},
        {"role": "user", "content": "hi\n\nhow are you?"}])
    assert split.prompt_eval_count == joined.prompt_eval_count
    assert split.message.content == joined.message.content


def test_a_template_may_carry_go_comments(live_server):
    client = _client(live_server)
    opts = {"num_predict": 1, "temperature": 0}
    plain = client.generate(model="demo", prompt="hi", template="Q: {{ .Prompt }} A:", options=opts)
    commented = client.generate(model="demo", prompt="hi", options=opts,
                                template="{{/* the question */}}Q: {{ .Prompt }} A:{{- /* trimmed */ -}}")
    assert commented.context == plain.context


def test_debug_render_only_answers_the_prompt_without_running(live_server):
    import httpx

    url = live_server.url
    g = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "hello", "system": "Be brief.",
                                                "_debug_render_only": True}, timeout=60).json()
    rendered = g["_debug_info"]["rendered_template"]
    assert "Be brief." in rendered and "hello" in rendered and g["done"] is False and "eval_count" not in g
    c = httpx.post(f"{url}/api/chat", json={"model": "demo", "_debug_render_only": True,
                                            "messages": [{"role": "user", "content": "hello"}]}, timeout=60).json()
    assert "hello" in c["_debug_info"]["rendered_template"] and c["message"]["content"] == ""


def test_tags_lists_what_a_newer_ollamas_config_says(tmp_path):
    # a config blob written by a newer Ollama carries capabilities and the context / embedding lengths,
    # which its /api/tags lists: listed from the store as they are (no GGUF read)
    import json

    import httpx

    from tests.gguf.test_ollama_store import _blob, make_store
    from tests.proxy.gguf_fixture import write_tiny_llama_gguf
    from tests.serve_process import start_serve, stop_serve

    store = tmp_path / "models"
    manifest_path = make_store(store, write_tiny_llama_gguf(tmp_path / "tiny.gguf"))
    manifest = json.loads(manifest_path.read_text())
    old = store / "blobs" / ("sha256-" + manifest["config"]["digest"].split(":")[1])
    config = {**json.loads(old.read_bytes()), "capabilities": ["completion", "tools"], "context_length": 131072,
              "embedding_length": 3072}
    manifest["config"].update(_blob(store, json.dumps(config).encode()))
    manifest_path.write_text(json.dumps(manifest))
    proc, url, _, _ = start_serve(tmp_path, "--kv-cache-memory", "16MiB", "--no-upstream",
                                  env={"OLLAMA_MODELS": str(store)})
    try:
        tags = {m["name"]: m for m in httpx.get(f"{url}/api/tags", timeout=30).json()["models"]}
        entry = tags["tiny:latest"]
        assert entry["capabilities"] == ["completion", "tools"]
        assert entry["details"]["context_length"] == 131072 and entry["details"]["embedding_length"] == 3072
        assert [m.model for m in ollama.Client(host=url).list().models] == list(tags)  # the client reads it
    finally:
        stop_serve(proc)


def test_answers_carry_the_model_name_as_sent(live_server):
    # Ollama's handlers answer `Model: req.Model`: a client that asked for "demo:latest" reads that back
    client = _client(live_server)
    for name in ("demo:latest", "DEMO"):
        assert client.generate(model=name, prompt="hi", options={"num_predict": 1}).model == name
        chunks = list(client.chat(model=name, messages=[{"role": "user", "content": "hi"}], stream=True,
                                  options={"num_predict": 1}))
        assert {c.model for c in chunks} == {name}
        assert client.chat(model=name, messages=[]).model == name  # the load answer too


def test_create_from_must_name_a_model(live_server):
    import httpx

    r = httpx.post(f"{live_server.url}/api/create", json={"model": "mine", "from": 5, "stream": False}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "from must be a model name (a string), got int"


def test_a_plain_string_stop_is_refused_as_ollama_refuses_it(live_server):
    # Ollama's Options.FromMap: `stop` is a []string field, a string given for it is an error
    # (`option "stop" must be of type array`); the python client passes a dict of options through as is
    client = _client(live_server)
    for call in (lambda: client.generate(model="demo", prompt="hi", options={"stop": "x", "num_predict": 2}),
                 lambda: client.chat(model="demo", messages=[{"role": "user", "content": "hi"}],
                                     options={"stop": "x", "num_predict": 2})):
        try:
            call()
        except ollama.ResponseError as exc:
            assert exc.status_code == 400 and 'option "stop" must be of type array' in exc.error, exc
        else:
            raise AssertionError("a string options.stop was accepted")
    r = client.generate(model="demo", prompt="hi", options={"stop": ["x"], "num_predict": 2})
    assert r.done


def test_developer_is_a_system_message_for_templates_without_it(live_server):
    """`developer` (what OpenAI clients send for instructions, and what reaches /api/chat when a VeloLLM proxy
    translates /v1 to an Ollama upstream) was a 400 'chat template rejected the conversation: unsupported role:
    developer' on /api/chat, where /v1 maps it to system for templates that have no such role."""
    client = _client(live_server)
    opts = {"num_predict": 4, "temperature": 0}
    dev = client.chat(model="demo", options=opts, messages=[
        {"role": "developer", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    sys = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    assert (dev.prompt_eval_count, dev.message.content) == (sys.prompt_eval_count, sys.message.content)
    both = client.chat(model="demo", options=opts, messages=[  # one system message, as two in a row are
        {"role": "system", "content": "Be terse."}, {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "hi"}])
    joined = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse.\n\nAnswer in French."}, {"role": "user", "content": "hi"}])
    assert (both.prompt_eval_count, both.message.content) == (joined.prompt_eval_count, joined.message.content)


def test_sampling_options_out_of_range_are_clamped_as_ollamas_sampler_does(live_server):
    """sample.NewSampler: a negative temperature is greedy, top_p and min_p are cut to [0, 1] (a top_p of 0 keeps
    the most likely token). Before, each was a 400 here; NaN stays one."""
    client = _client(live_server)
    greedy = client.generate(model="demo", prompt="once upon", options={"num_predict": 8, "temperature": 0})
    for options in ({"temperature": -1}, {"temperature": 0.9, "top_p": 0}, {"temperature": 0.9, "top_p": -0.5}):
        r = client.generate(model="demo", prompt="once upon", options={"num_predict": 8, "seed": 3, **options})
        assert r.response == greedy.response, options
    for options in ({"top_p": 2}, {"min_p": -1}, {"min_p": 3}):
        r = client.generate(model="demo", prompt="once upon", options={"num_predict": 8, "seed": 3, **options})
        assert r.done, options
