"""A store model's thinking, read off its TEMPLATE layer as Ollama's thinking.InferTags reads it: the tags around
`.Thinking` in a range over `.Messages` give the capability and the split of the answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from velollm.api.thinking import think_plan, thinking_template
from velollm.engine.text.go_template.chat import think_tags
from velollm.reasoning import ThinkSetting

# Ollama's qwen3 library template, the parts about thinking.
QWEN3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if (and $.IsThinkSet (and .Thinking $last)) -}}
<think>{{ .Thinking }}</think>
{{ end -}}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) -}}
<think>

</think>

{{ end -}}
{{ end }}
{{- end }}"""
# Magistral writes [THINK]...[/THINK]: Ollama splits on those.
MAGISTRAL = """{{- range .Messages }}[{{ .Role }}]{{ if .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}{{ .Content }}
{{- end }}[assistant]"""
# A template that writes </think> only to switch thinking off (Qwen3's 2507 instruct releases): no .Thinking.
NO_THINKING = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if and .IsThinkSet (not .Think) }}<think>

</think>

{{ end }}"""


@pytest.mark.parametrize("template, tags", [
    (QWEN3, ("<think>", "</think>")),
    (MAGISTRAL, ("[THINK]", "[/THINK]")),
    (NO_THINKING, ("", "")),
    # Ollama's heuristic reads a field in a range over the .Messages field: not $m.Thinking, not outside a range
    ("{{ range $m := .Messages }}<think>{{ $m.Thinking }}</think>{{ end }}", ("", "")),
    ("<think>{{ .Thinking }}</think>{{ .Prompt }}", ("", "")),
    ("{{ range .Tools }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
    ("{{ range .Messages }}{{ .Thinking }}</think>{{ end }}", ("", "</think>")),
    ("{{ .Prompt", ("", "")),  # does not parse: no tags
])
def test_tags_as_ollama_infers_them(template, tags):
    assert think_tags(template) == tags


def _store_model(template: str) -> SimpleNamespace:
    return SimpleNamespace(chat_template=None, go_template=template)


def test_capability_and_split_follow_the_inferred_tags():
    # The thinking capability is Ollama's: both tags found (a `</think>` anywhere in the template said so before)
    assert not thinking_template(_store_model(NO_THINKING)).supports_thinking
    assert thinking_template(_store_model(QWEN3)).supports_thinking
    magistral = _store_model(MAGISTRAL)
    assert thinking_template(magistral).supports_thinking  # it had no `</think>`: think was a 400
    plan = think_plan(magistral, ThinkSetting(enabled=True), "magistral", strict=True)
    split = plan.split("[THINK]The user greets.[/THINK]Hello!", prompt_opened=False)
    assert (split.reasoning, split.content) == ("The user greets.", "Hello!")
    with pytest.raises(Exception, match="does not support thinking"):
        think_plan(_store_model(NO_THINKING), ThinkSetting(enabled=True), "instruct", strict=True)


def _rendered(template: str, think: ThinkSetting, strict: bool = True) -> str:
    from velollm.engine.text.go_template.chat import render_go_chat, think_values

    kwargs = think_plan(_store_model(template), think, "m", strict=strict).template_kwargs
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A", "thinking": "T"}]
    return render_go_chat(template, messages, think=think_values(kwargs.get("enable_thinking"),
                                                                 kwargs.get("reasoning_effort")))


SET = "{{ range .Messages }}{{ if and $.IsThinkSet .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}{{ .Content }}" \
      "{{ end }}|set={{ .IsThinkSet }}"  # Magistral's way: .IsThinkSet without .Think


@pytest.mark.parametrize("template, think, expected", [
    # Ollama: think unset on a thinking model is think:true; .IsThinkSet says the request's think was set
    (SET, ThinkSetting(), "hi[THINK]T[/THINK]A|set=true"),
    (SET, ThinkSetting(enabled=True), "hi[THINK]T[/THINK]A|set=true"),
    (SET, ThinkSetting(enabled=False), "hi[THINK]T[/THINK]A|set=true"),
    (SET + "{{ .Think }}", ThinkSetting(enabled=False), "hi[THINK]T[/THINK]A|set=truefalse"),
    # a model that cannot think takes think:false (IsThinkSet true, Think false: the template may say so)
    (NO_THINKING, ThinkSetting(enabled=False), ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
                                               "<|im_start|>assistant\n<think>\n\n</think>\n\n")),
    (NO_THINKING, ThinkSetting(), ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
                                  "<|im_start|>assistant\n")),
])
def test_is_think_set_is_whether_the_request_set_think(template, think, expected):
    """.IsThinkSet and .Think reach a template that reads them whether or not it names .Think (Magistral's reads
    only .IsThinkSet: its history's thinking was dropped from the prompt; a think:false was lost on a model
    without thinking)."""
    assert _rendered(template, think) == expected
