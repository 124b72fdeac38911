"""Which template of a model speaks: its Ollama TEMPLATE layer (a Go template, `Tokenizer.go_template`) renders
its chats only without a jinja template, and its fill-in-the-middle prompts whenever it names .Suffix. One place,
so that rendering, capabilities, tools and thinking cannot disagree."""

from __future__ import annotations

from typing import Any


def go_layer(tokenizer: Any) -> str | None:
    """The Ollama TEMPLATE layer (a Go template) that renders this tokenizer's chats, or None: a model has
    one in use only without a jinja template. The one check behind rendering, capabilities, tools and
    thinking, so they cannot disagree about which template a model speaks."""
    go = getattr(tokenizer, "go_template", None)
    return go if go and getattr(tokenizer, "chat_template", None) is None else None


def insert_layer(tokenizer: Any) -> str | None:
    """The Ollama TEMPLATE layer that renders a fill-in-the-middle prompt (`suffix`), or None: Ollama's insert
    capability, a layer that names .Suffix. A jinja template has no such form, so the layer renders it also where
    the jinja template renders the chats (a registry coder model's GGUF has both)."""
    go = getattr(tokenizer, "go_template", None)
    if not go:
        return None
    from velollm.engine.text.go_template.chat import template_vars

    return go if "suffix" in template_vars(go) else None
