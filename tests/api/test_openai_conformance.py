"""OpenAI API details found by driving `velollm serve demo` with the openai SDK as a user would
(each test names what was wrong before)."""

from __future__ import annotations

import json
import re

import httpx
import ollama
import openai
import pytest

from velollm.engine.loader.demo import DEMO_NAME
from velollm.engine.text.tokenizer import Tokenizer


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_developer_role_is_system_for_templates_without_it(live_server):
    """`developer` (what newer OpenAI clients send for instructions) was a 400 'chat template rejected
    the conversation: unsupported role: developer' on the demo model, whose template has no such role."""
    client = oai(live_server)
    kw = dict(model="demo", max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    dev = client.chat.completions.create(messages=[{"role": "developer", "content": "Be terse."},
                                                   {"role": "user", "content": "hi"}], **kw)
    sys = client.chat.completions.create(messages=[{"role": "system", "content": "Be terse."},
                                                   {"role": "user", "content": "hi"}], **kw)
    assert dev.usage.prompt_tokens == sys.usage.prompt_tokens
    assert dev.choices[0].message.content == sys.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(messages=[{"role": "bogus", "content": "x"}], **kw)


def test_a_later_system_message_is_a_system_turn_on_the_demo(live_server):
    """A system message after the first turn (an app steering a running chat) was a 400 'chat template rejected
    the conversation: unsupported role: system' on the demo model, on /v1 and /api/chat alike: its template,
    written after Llama 3.1's, took a system message only first, where Llama 3.1's renders one in its place."""
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "why?"}]
    r = oai(live_server).chat.completions.create(model="demo", messages=messages, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason == "length"
    answer = ollama.Client(host=live_server.url).chat(model="demo", messages=messages, options={"num_predict": 2})
    assert answer.done_reason == "length"
    rendered = httpx.post(f"{live_server.url}/api/chat", timeout=60, json={
        "model": "demo", "messages": messages, "stream": False, "_debug_render_only": True}).json()
    assert ("hello<|eot_id|><|start_header_id|>system<|end_header_id|>\n\nAnswer in French.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nwhy?") in rendered["_debug_info"]["rendered_template"]


def test_token_ids_are_bounded_by_the_models_vocabulary_on_every_field(live_server):
    """The demo's tokenizer has 950 ids, its embedding 960 rows (padded to 64): /v1/completions took prompt ids
    below 950 only, where logit_bias, allowed_token_ids, stop_token_ids and /api/generate's context took any
    below 960. Every field is bounded by the model's rows now, vLLM's bound, in one message."""
    vocab = httpx.post(f"{live_server.url}/api/show", json={"model": "demo"}).json()["model_info"]["llama.vocab_size"]
    assert Tokenizer.from_folder(live_server.log.parent / "cache" / DEMO_NAME).vocab_size < vocab - 1
    client = oai(live_server)
    kw = dict(model="demo", max_tokens=1, temperature=0)
    fields = {"prompt": lambda t: {"prompt": [1, t]}, "logit_bias": lambda t: {"logit_bias": {str(t): 1}},
              "allowed_token_ids": lambda t: {"extra_body": {"allowed_token_ids": [t]}},
              "stop_token_ids": lambda t: {"extra_body": {"stop_token_ids": [t]}}}
    for param, field in fields.items():
        body = {"prompt": "hi", **field(vocab - 1)}
        assert client.completions.create(**{**kw, **body}).choices[0].finish_reason in ("length", "stop"), param
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(**{**kw, "prompt": "hi", **field(vocab)})
        assert info.value.body["param"] == param
        assert f"outside the vocabulary (0..{vocab - 1})" in info.value.body["message"], info.value.body


def test_responses_include_of_an_unknown_value_is_a_400(live_server):
    """A misspelt include ("message.output_text.logprob") was taken and ignored: an answer without the logprobs
    asked for. OpenAI's 400 names the item; every value the SDK knows is still taken."""
    client = oai(live_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="demo", input="hi", max_output_tokens=2, top_logprobs=2,
                                include=["message.output_text.logprob"])
    assert info.value.body["param"] == "include[0]" and "message.output_text.logprobs" in info.value.body["message"]
    every = ["file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
             "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
             "reasoning.encrypted_content", "message.output_text.logprobs"]
    assert client.responses.create(model="demo", input="hi", max_output_tokens=2, include=every).output


def test_responses_truncation_auto_drops_the_first_items(live_server):
    """truncation "auto" was echoed but not done: a conversation over the context was the 400 of "disabled".
    OpenAI drops items from the conversation's start; a previous_response_id chain goes on past the context."""
    client = oai(live_server)
    items = [{"role": role, "content": f"turn {i} " + "word " * 40}
             for i in range(12) for role in ("user", "assistant")] + [{"role": "user", "content": "last"}]
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.responses.create(model="demo", input=items, max_output_tokens=4)
    r = client.responses.create(model="demo", input=items, max_output_tokens=4, truncation="auto")
    assert r.truncation == "auto" and r.output_text and r.usage.input_tokens < live_server.max_model_len
    previous = None
    for _ in range(4):  # each turn ~200 tokens: the chain passes 512 at the third
        r = client.responses.create(model="demo", input="word " * 180, previous_response_id=previous,
                                    max_output_tokens=2, truncation="auto")
        previous = r.id
    assert r.usage.input_tokens < live_server.max_model_len
    assert [i.content[0].text for i in client.responses.input_items.list(r.id, order="asc").data][:1] == \
        ["word " * 180]  # the stored conversation stays whole


def test_chat_echo_starts_the_answer_with_the_continued_message(live_server):
    """vLLM's chat `echo` was ignored: a continued assistant message came back without its start. With echo the
    content (whole and streamed) is the last message's text, then the answer; a user's last message is no
    assistant text, so nothing is echoed then."""
    client = oai(live_server)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The lighthouse"}]
    extra = {"ignore_eos": True, "continue_final_message": True}
    kw = {"model": "demo", "messages": turns, "max_tokens": 4, "temperature": 0}
    plain = client.chat.completions.create(**kw, extra_body=extra).choices[0].message.content
    echoed = client.chat.completions.create(**kw, extra_body={**extra, "echo": True}).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        **kw, stream=True, extra_body={**extra, "echo": True}) if c.choices)
    assert echoed == streamed == "The lighthouse" + plain
    user_last = {**kw, "messages": turns[:1], "extra_body": {"ignore_eos": True}}
    assert client.chat.completions.create(**user_last).choices[0].message.content == \
        client.chat.completions.create(**{**user_last, "extra_body": {"ignore_eos": True, "echo": True}}
                                       ).choices[0].message.content


def test_responses_logprobs_when_included(live_server):
    """`include=["message.output_text.logprobs"]` with `top_logprobs` gave `logprobs: []` in the output
    text and its stream events (computed for the chat underneath, then dropped)."""
    client = oai(live_server)
    kw = dict(model="demo", input="hello", max_output_tokens=6, temperature=0, top_logprobs=2,
              include=["message.output_text.logprobs"], extra_body={"ignore_eos": True})
    whole = client.responses.create(**kw)
    logprobs = whole.output[0].content[0].logprobs
    assert len(logprobs) == 6 and all(len(lp.top_logprobs) == 2 for lp in logprobs)
    assert "".join(lp.token for lp in logprobs) == whole.output_text
    chat = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}], max_tokens=6,
                                          temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    assert [lp.logprob for lp in logprobs] == pytest.approx([e.logprob for e in chat.choices[0].logprobs.content])
    deltas, done, final = [], None, None
    with client.responses.stream(**kw) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas += event.logprobs
            elif event.type == "response.output_text.done":
                done = event.logprobs
            elif event.type == "response.incomplete":
                final = event.response
    assert [d.token for d in deltas] == [d.token for d in done] == [lp.token for lp in logprobs]
    assert [lp.token for lp in final.output[0].content[0].logprobs] == [lp.token for lp in logprobs]
    plain = client.responses.create(model="demo", input="hello", max_output_tokens=3)
    assert plain.output[0].content[0].logprobs == []


def test_continue_final_message_prefills_the_assistant(live_server):
    """vLLM's `continue_final_message` (assistant prefill) was silently ignored: the final assistant
    message was closed with end-of-turn and a new turn generated. The continued prompt is the rendered
    chat cut after the prefill, so greedy decoding equals /v1/completions of that text."""
    client = oai(live_server)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The lighthouse"}]
    kw = dict(model="demo", max_tokens=8, temperature=0)
    continued = client.chat.completions.create(messages=turns, **kw,
                                               extra_body={"ignore_eos": True, "continue_final_message": True})
    prompt = ("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"  # the tokenizer adds BOS
              "<|start_header_id|>assistant<|end_header_id|>\n\nThe lighthouse")
    plain = client.completions.create(prompt=prompt, **kw, extra_body={"ignore_eos": True})
    assert continued.usage.prompt_tokens == plain.usage.prompt_tokens
    assert continued.choices[0].message.content == plain.choices[0].text
    new_turn = client.chat.completions.create(messages=turns, **kw, extra_body={"ignore_eos": True})
    assert new_turn.usage.prompt_tokens > continued.usage.prompt_tokens  # eot + a new assistant header
    with pytest.raises(openai.BadRequestError, match="add_generation_prompt"):
        client.chat.completions.create(messages=turns, **kw, extra_body={"continue_final_message": True,
                                                                         "add_generation_prompt": True})
    with pytest.raises(openai.BadRequestError, match="final assistant message") as err:
        client.chat.completions.create(messages=turns[:1], **kw, extra_body={"continue_final_message": True})
    assert err.value.body["param"] == "continue_final_message"


def test_audio_output_is_refused(live_server):
    """Audio output was silently ignored (a plain text answer came back). (The deprecated functions /
    function_call run as tools: tests/api/test_legacy_functions.py.)"""
    client = oai(live_server)
    kw = dict(model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="audio") as err:
        client.chat.completions.create(**kw, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    assert err.value.body["param"] == "modalities"
    assert client.chat.completions.create(**kw, modalities=["text"], function_call="auto").choices


def test_responses_errors_name_the_responses_fields(live_server):
    """The Responses API's 400s named the fields of the chat request underneath: `messages` for a too
    long or empty input, `response_format` for text.format, `reasoning_effort`, `tools[0].function`."""
    client = oai(live_server)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="demo", input="hello " * 2000, max_output_tokens=3)
    assert err.value.code == "context_length_exceeded" and err.value.body["param"] == "input"
    assert "your input resulted in" in err.value.message and "messages" not in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="demo", input=[], max_output_tokens=3)
    assert err.value.body["param"] == "input" and "input must not be empty" in err.value.message
    bad_schema = {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}
    for kw, param, text in [({"text": {"format": bad_schema}}, "text.format.schema", "text.format.schema is not"),
                            ({"reasoning": {"effort": "bogus"}}, "reasoning.effort", "reasoning.effort must"),
                            ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "nonsense"}}]},
                             "tools", "tools[0].parameters is not")]:
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="demo", input="hi", max_output_tokens=3, **kw)
        assert err.value.body["param"] == param and text in err.value.message, err.value.body


WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}}
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC"]}},
                                           "required": ["tz"]}}


def test_allowed_tools_tool_choice(live_server):
    """`tool_choice: {"type": "allowed_tools", ...}` (chat and Responses) was a 400 'must name a function'."""
    client = oai(live_server)
    tools = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}]
    only_time = {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}
    r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "weather?"}], max_tokens=80,
                                       tools=tools, tool_choice={"type": "allowed_tools", "allowed_tools": only_time})
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in r.choices[0].message.tool_calls] == \
        [("get_time", {"tz": "UTC"})]
    unknown = {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]}
    with pytest.raises(openai.BadRequestError, match="'nope', which is not in tools"):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                       tools=tools, tool_choice={"type": "allowed_tools", "allowed_tools": unknown})
    response = client.responses.create(
        model="demo", input="weather?", max_output_tokens=80,
        tools=[{"type": "function", **WEATHER}, {"type": "function", **TIME}],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]})
    assert [(o.type, o.name, json.loads(o.arguments)) for o in response.output] == \
        [("function_call", "get_time", {"tz": "UTC"})]
    assert response.tool_choice.type == "allowed_tools"


def _streamed_calls(chunks) -> list[tuple[str, dict]]:
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name, args = calls.setdefault(delta.index, ["", ""])
            calls[delta.index] = [name + (delta.function.name or ""), args + (delta.function.arguments or "")]
    return [(name, json.loads(args)) for _, (name, args) in sorted(calls.items())]


def test_streamed_tool_calls_equal_whole_ones(live_server):
    """With the same seed a stream sent a repeated call twice where the whole answer (deduplicated) had
    it once."""
    client = oai(live_server)
    time_tool = {**TIME, "parameters": {**TIME["parameters"], "properties": {"tz": {"type": "string",
                                                                                  "enum": ["UTC", "CET"]}}}}
    kw = dict(model="demo", messages=[{"role": "user", "content": "time?"}], max_tokens=150,
              tools=[{"type": "function", "function": time_tool}], tool_choice="required")
    for seed in range(4, 10):  # seeds 6 and 9 repeat the call (demo model, this prompt, 512 tokens)
        whole = client.chat.completions.create(**kw, seed=seed).choices[0].message.tool_calls
        streamed = _streamed_calls(client.chat.completions.create(**kw, seed=seed, stream=True))
        assert streamed == [(c.function.name, json.loads(c.function.arguments)) for c in whole], seed


def test_schema_the_grammar_cannot_take_is_a_clean_400(live_server):
    """A schema xgrammar refuses (a regex backreference) answered with xgrammar's log stamp and C++ source
    path in the message ('[18:05:30] /project/cpp/regex_converter.cc:94: ...')."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}, "required": ["a"]}
    with pytest.raises(openai.BadRequestError) as err:
        oai(live_server).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    message = err.value.body["message"]
    assert message.startswith("cannot compile the json_schema constraint: ") and "Backreference" in message
    assert ".cc:" not in message and not message.endswith("\n") and err.value.body["param"] == "response_format"


def test_responses_item_reference_names_stored_items(live_server):
    """Stateful clients (Codex-like) send `{"type": "item_reference", "id": ...}` for an item of an
    earlier stored response instead of replaying it; it was a 400 'items of type item_reference'."""
    client = oai(live_server)
    tools = [{"type": "function", **WEATHER}]
    first = client.responses.create(model="demo", input="weather in Paris?", tools=tools, tool_choice="required",
                                    max_output_tokens=60)
    call = first.output[0]
    asked = client.responses.input_items.list(first.id).data[0]
    follow = [{"type": "item_reference", "id": asked.id}, {"type": "item_reference", "id": call.id},
              {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model="demo", input=follow, tools=tools, max_output_tokens=3, temperature=0,
                                     extra_body={"ignore_eos": True})
    replayed = [{"role": "user", "content": "weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                follow[-1]]
    same = client.responses.create(model="demo", input=replayed, tools=tools, max_output_tokens=3, temperature=0,
                                   extra_body={"ignore_eos": True})
    assert second.usage.input_tokens == same.usage.input_tokens and second.output_text == same.output_text
    assert [i.type for i in client.responses.input_items.list(second.id, order="asc").data] == \
        ["message", "function_call", "function_call_output"]
    with pytest.raises(openai.BadRequestError, match="'fc_nope' not found") as err:
        client.responses.create(model="demo", input=[{"type": "item_reference", "id": "fc_nope"}])
    assert err.value.body["param"] == "input[0].id"


def test_reasoning_item_with_bad_content_is_a_400(live_server):
    """A reasoning input item whose content (or summary) is no array was a 500 ('float' object is not
    iterable)."""
    client = oai(live_server)
    for key in ("content", "summary"):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="demo", max_output_tokens=2, input=[
                {"type": "reasoning", "id": "rs_1", key: 1.5}, {"role": "user", "content": "hi"}])
        assert err.value.body["param"] == f"input[0].{key}"


def test_assistant_refusal_part_in_history(live_server):
    """An assistant message replayed with a `refusal` content part (OpenAI's shape for a refusal) was a
    400 'type refusal is not supported: this server takes text only'; it is what the assistant said."""
    client = oai(live_server)
    kw = dict(model="demo", max_tokens=2, temperature=0)
    said = [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "user", "content": "y"}]
    plain = [said[0], {"role": "assistant", "content": "No."}, said[2]]
    assert client.chat.completions.create(messages=said, **kw).usage.prompt_tokens == \
        client.chat.completions.create(messages=plain, **kw).usage.prompt_tokens


def test_input_items_of_a_chained_response_hold_the_earlier_turns(live_server):
    """input_items of a response made with previous_response_id listed only its own input; they are
    the items the response was generated from: the earlier turns' inputs and outputs, then its input."""
    client = oai(live_server)
    first = client.responses.create(model="demo", input=[{"role": "user", "content": "one"},
                                                         {"role": "assistant", "content": "two"},
                                                         {"role": "user", "content": "three"}], max_output_tokens=2)
    second = client.responses.create(model="demo", previous_response_id=first.id, input="four", max_output_tokens=2)
    third = client.responses.create(model="demo", previous_response_id=second.id, input="five", max_output_tokens=2)
    items = client.responses.input_items.list(third.id, order="asc", limit=100).data
    assert [i.content[0].text for i in items] == \
        ["one", "two", "three", first.output_text, "four", second.output_text, "five"]
    assert items[3].id == first.output[0].id and items[3].type == "message" and items[3].role == "assistant"
    assert [i.content[0].text for i in client.responses.input_items.list(first.id, order="asc").data] == \
        ["one", "two", "three"]


def test_responses_null_tool_choice_is_auto(live_server):
    """`"tool_choice": null` (clients that send every optional field, null when unset) was the one null field
    /v1/responses refused (400 "Invalid 'tool_choice'"); chat completions and every other field take null."""
    client = oai(live_server)
    tools = [{"type": "function", **WEATHER}]
    r = client.responses.create(model="demo", input="hi", max_output_tokens=4, tools=tools,
                                extra_body={"tool_choice": None})
    assert r.tool_choice == "auto" and r.status in ("completed", "incomplete")
    r = client.responses.create(model="demo", input="hi", max_output_tokens=4, extra_body={"tool_choice": None})
    assert r.tool_choice == "auto"


def test_logprob_bytes_are_the_tokens_own(live_server):
    """A token holding part of a character (byte-level BPE) decodes alone to U+FFFD, and its `bytes` were that
    character's UTF-8 (EF BF BD) instead of its own: joining the tokens' bytes, which is what `bytes` is for,
    did not give the answer back. Now they join to the text, whole and streamed, on chat and on Ollama's chat."""
    import httpx

    def joined(entries) -> str:  # special tokens (<|eot_id|>, ...) have logprobs but are not in the text
        return bytes(b for e in entries if not (e["token"].startswith("<|") and e["token"].endswith("|>"))
                     for b in e["bytes"]).decode("utf-8", "replace")

    client = oai(live_server)
    split_seen = False
    for seed in range(6):
        kw = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 24, "seed": seed,
              "logprobs": True, "top_logprobs": 2}
        choice = client.chat.completions.create(**kw).choices[0]
        entries = choice.logprobs.content
        assert joined([e.model_dump() for e in entries]) == choice.message.content
        split = [e for e in entries if e.token == "\ufffd"]
        split_seen |= bool(split)
        assert all(e.bytes != [0xEF, 0xBF, 0xBD] for e in split)
        streamed = [e for c in client.chat.completions.create(**kw, stream=True)
                    if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        assert [e.bytes for e in streamed] == [e.bytes for e in entries]
        native = httpx.post(f"{live_server.url}/api/chat", timeout=60, json={
            "model": "demo", "messages": kw["messages"], "stream": False, "logprobs": True,
            "options": {"num_predict": 24, "seed": seed, "temperature": 1.0, "top_p": 1.0, "top_k": 0}}).json()
        assert joined(native["logprobs"]) == native["message"]["content"]
    assert split_seen  # the demo model writes split characters within these seeds


def test_max_completion_tokens_errors_name_it(live_server):
    """max_completion_tokens 0 was a 400 naming max_tokens (message and param), a field the client never sent;
    OpenAI's names max_completion_tokens. max_tokens' own errors still name max_tokens."""
    client = oai(live_server)
    for field in ("max_completion_tokens", "max_tokens"):
        for value in (0, -3):
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                               **{field: value})
            assert info.value.body["param"] == field and info.value.body["message"].startswith(f"{field} ")
    answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                            max_completion_tokens=2, extra_body={"ignore_eos": True})
    assert answer.usage.completion_tokens == 2


def test_return_tokens_as_token_ids(live_server):
    """vLLM's return_tokens_as_token_ids spells each logprob's token "token_id:N" (chat content and top_logprobs,
    completions' tokens and top_logprobs keys, whole and streamed); it was ignored: token texts came back, which
    cannot tell apart the tokens of a split character or a special token from its text."""
    client = oai(live_server)
    as_ids = {"return_tokens_as_token_ids": True, "ignore_eos": True}
    kw = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0,
          "logprobs": True, "top_logprobs": 2}
    plain = client.chat.completions.create(**kw, extra_body={"ignore_eos": True}).choices[0].logprobs.content
    ids = client.chat.completions.create(**kw, extra_body=as_ids).choices[0].logprobs.content
    streamed = [entry for chunk in client.chat.completions.create(**kw, stream=True, extra_body=as_ids)
                if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [e.logprob for e in ids] == [e.logprob for e in plain] and len(ids) == 6
    assert [e.token for e in streamed] == [e.token for e in ids]
    for got, want in zip(ids, plain):
        assert re.fullmatch(r"token_id:\d+", got.token) and got.bytes == want.bytes
        assert all(re.fullmatch(r"token_id:\d+", top.token) for top in got.top_logprobs)
    prompt = [71, 72, 294]
    answer = client.completions.create(model="demo", prompt=prompt, max_tokens=2, echo=True, logprobs=2,
                                       temperature=0, extra_body=as_ids).choices[0].logprobs
    assert answer.tokens[:3] == [f"token_id:{i}" for i in prompt]
    assert all(re.fullmatch(r"token_id:\d+", t) for t in answer.tokens[3:]) and len(answer.tokens) == 5
    for token, top in zip(answer.tokens[1:], answer.top_logprobs[1:]):
        assert token in top and all(key.startswith("token_id:") for key in top)
