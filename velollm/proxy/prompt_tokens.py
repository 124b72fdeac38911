"""The prompt's token count where an OpenAI-compatible upstream sends no usage in a stream: llama-cpp-python's
server ignores `stream_options.include_usage`, and Ollama's final line has a prompt_eval_count.

Counted only where the count is exact: a text completion's prompt (what /api/generate raw becomes), tokenized
by the upstream itself through llama-cpp-python's /extras/tokenize, which tokenizes as its completion does
(special tokens, BOS). A chat prompt is the model's chat template applied to the messages, which the upstream
renders and does not show: any count made here from the messages would be a guess, so none is made, and the
final line leaves prompt_eval_count out (as Ollama leaves out a 0) rather than claim a 0 or a guess.
"""

from __future__ import annotations

import logging
from typing import Any

from velollm.proxy.upstream import Upstream, UpstreamUnavailable

logger = logging.getLogger(__name__)

TOKENIZE_PATH = "/extras/tokenize"


async def count_prompt_tokens(upstream: Upstream, path: str, body: dict[str, Any]) -> int | None:
    """The tokens of `body`'s prompt as the upstream counts them, or None where that cannot be known exactly
    (a chat, a fill-in-the-middle suffix, an upstream without the endpoint, one that fails to answer)."""
    prompt = body.get("prompt")
    if path != "/v1/completions" or not isinstance(prompt, str) or not prompt or body.get("suffix"):
        return None
    if upstream.tokenize_missing:
        return None
    try:
        status, answer = await upstream.request_json("POST", TOKENIZE_PATH, {"input": prompt, "model": body.get("model")},
                                                     timeout=upstream.config.connect_timeout + 5.0)
    except UpstreamUnavailable as exc:
        logger.debug("upstream %s: counting the prompt failed (%s)", upstream.url, exc)
        return None
    tokens = answer.get("tokens") if status == 200 and isinstance(answer, dict) else None
    if status in (404, 405):
        upstream.tokenize_missing = True  # not asked again
    return len(tokens) if isinstance(tokens, list) else None
