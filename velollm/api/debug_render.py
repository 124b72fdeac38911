"""Ollama's `_debug_render_only`: the prompt a request renders to, answered instead of running the model."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from velollm.wire.timestamps import now_rfc3339


def debug_render(model: str, chat: bool, tokenizer: Any, prompt_ids: list[int]) -> JSONResponse:
    """Ollama's answer (GenerateResponse / ChatResponse with `_debug_info`): the prompt as text, special
    tokens included, after the template and any truncation, as the model would have seen it."""
    body: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    body.update({"message": {"role": "", "content": ""}} if chat else {"response": ""})
    body["done"] = False
    body["_debug_info"] = {"rendered_template": tokenizer.decode(prompt_ids, skip_special_tokens=False)}
    return JSONResponse(body)
