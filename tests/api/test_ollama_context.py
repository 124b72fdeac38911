"""/api/generate's `context`: the prompt and the answer, as Ollama's (tokenize(prompt + response)), so without the
end-of-sequence token that ended the answer: a client continuing with it would put that token mid-prompt."""

from __future__ import annotations

from velollm.api.generation import ChoiceState
from velollm.api.handler import Call
from velollm.api.ollama_format import OllamaFormatter

EOS, STOP = 2, 7


def _context(token_ids: list[int], finish_reason: str) -> list[int]:
    fmt = OllamaFormatter("m", False, Call("generate"), 0.0, [1, 10, 11], True, None, end_ids=frozenset({EOS, STOP}))
    choice = ChoiceState(0, token_ids=token_ids, finish_reason=finish_reason, t_first=0.0, t_last=0.0)
    return fmt.final(choice)["context"]


def test_the_token_that_ended_the_answer_is_left_out():
    assert _context([20, 21, EOS], "stop") == [1, 10, 11, 20, 21]
    assert _context([20, STOP], "stop") == [1, 10, 11, 20]  # a stop_token_ids token, as Ollama's text would lack it


def test_an_answer_cut_by_its_length_keeps_every_token():
    assert _context([20, 21, EOS], "length") == [1, 10, 11, 20, 21, EOS]  # EOS sampled mid-answer (ignore_eos)
    assert _context([20, 21], "stop") == [1, 10, 11, 20, 21]  # a stop string ended it: no end token to leave out
