"""next_turn_prefix with Qwen3's and Llama 3.1's real chat templates: the text the next prompt starts with,
whatever the next user message is, cut after a special token; None when the template cannot tell."""

from __future__ import annotations

import pytest

from velollm.api.native_chat import render_chat
from velollm.context.next_turn import next_turn_prefix
from velollm.engine.text.tokenizer import Tokenizer

HISTORY = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Where is the mill?"}]


@pytest.fixture(scope="module", params=["qwen3", "llama3.1"])
def tokenizer(request, qwen3_tokenizer_folder, llama31_tokenizer_folder) -> Tokenizer:
    if request.param == "qwen3":
        return Tokenizer.from_folder(qwen3_tokenizer_folder, model_config={"model_type": "qwen3"})
    return Tokenizer.from_folder(llama31_tokenizer_folder, model_config={"model_type": "llama"})


def specials(tokenizer: Tokenizer) -> frozenset[str]:
    return tokenizer.special_texts


@pytest.mark.parametrize("content", ["  By the river. \n", "<think>\nhmm\n</think>\n\nBy the river."])
def test_the_prefix_starts_every_next_prompt_and_ends_after_a_special_token(tokenizer, content):
    render = lambda ms: render_chat(tokenizer, ms, {"add_generation_prompt": True})
    answer = {"role": "assistant", "content": content}
    prefix = next_turn_prefix(render, HISTORY, answer, specials(tokenizer))
    assert prefix is not None and any(prefix.endswith(s) for s in specials(tokenizer))
    for user in ("And the bakery?", " leading space", "\nnew line"):
        following = render([*HISTORY, answer, {"role": "user", "content": user}])
        assert following.startswith(prefix)
        # its ids are a prefix of the next prompt's: the special token splits the text there
        ids = tokenizer.encode(prefix, add_special_tokens=False)
        assert tokenizer.encode(following, add_special_tokens=False)[:len(ids)] == ids
    if "<|im_end|>" in prefix:  # Qwen3 drops an earlier answer's thinking
        assert "hmm" not in prefix and "By the river.<|im_end|>" in prefix.replace(" \n<", "<")
    else:  # Llama 3.1 trims it
        assert "<|end_header_id|>\n\n" + content.strip() + "<|eot_id|>" in prefix


def test_a_template_that_refuses_the_probe_or_has_no_special_tokens_gives_none():
    def refuses_system(ms):
        if any(m["role"] == "system" for m in ms[1:]):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        return "".join(f"<s>{m['role']}: {m['content']}</s>" for m in ms)

    answer = {"role": "assistant", "content": "By the river."}
    assert next_turn_prefix(refuses_system, HISTORY[1:], answer, {"<s>", "</s>"}) is None
    plain = lambda ms: "".join(f"{m['role']}: {m['content']}\n" for m in ms)
    assert next_turn_prefix(plain, HISTORY, answer, set()) is None
