"""A store model's params layer as the defaults of an OpenAI-format request (/v1/chat/completions,
/v1/completions, /v1/responses).

Ollama's /v1 routes turn the request into an /api/chat one whose options are merged over the model's, so a
Modelfile's `PARAMETER temperature 0.6` holds there too (vLLM likewise applies generation_config.json). A field
the request sends (not null) wins; one it leaves out takes the model's value under its OpenAI/vLLM name. A model
whose layer is invalid is the 400 /api/chat gives (model_options), in the route's format.
"""

from __future__ import annotations

from typing import Any

from velollm.api.model_options import model_options

# Ollama option name -> the request field it defaults (same meaning and range on both sides)
_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
           "repeat_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
           "frequency_penalty": "frequency_penalty", "seed": "seed", "stop": "stop"}
# every name a request may give its output budget in (chat's two; the Responses body arrives as chat's)
_BUDGET_FIELDS = ("max_tokens", "max_completion_tokens")


def with_model_defaults(body: dict[str, Any], served: Any) -> dict[str, Any]:
    """`body` with the fields it leaves out (or sends as null) taken from the served model's params layer."""
    info = served.engine.source.info
    options = model_options(served.name, info.default_options, info.layer_error)
    defaults = {field: options[name] for name, field in _FIELDS.items() if name in options}
    if isinstance(defaults.get("seed"), int) and defaults["seed"] < 0:
        del defaults["seed"]  # Ollama's -1: a random seed each time, which is OpenAI's unseeded default
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0 and all(body.get(k) is None for k in _BUDGET_FIELDS):
        defaults["max_tokens"] = num_predict  # -1 (no limit) and -2 (fill the context) are the default already
    missing = {field: value for field, value in defaults.items() if body.get(field) is None}
    return {**body, **missing} if missing else body
