"""Big inputs: refused by length before encoding when they cannot fit, else encoded off the GIL, exactly."""

from __future__ import annotations

import threading
import time

import pytest

from tests.gc_paused import gc_paused
from velollm.engine.loader.demo import ensure_demo
from velollm.engine.text.tokenizer import BIG_TEXT_CHARS, Tokenizer
from velollm.errors import ContextOverflow

TEXT = "The quick brown fox, 12 jumps; über 3.5 lazy dogs!\n\tdef f(x): return x ** 2  # ok\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = Tokenizer.from_folder(ensure_demo(tmp_path_factory.mktemp("demo")))
    yield tok
    tok.close()


def test_big_text_encodes_exactly_as_in_process(tokenizer):
    text = TEXT * (3 * BIG_TEXT_CHARS // len(TEXT))
    assert len(text) > BIG_TEXT_CHARS
    for special in (True, False):
        assert tokenizer.encode(text, add_special_tokens=special) == \
            tokenizer.backend.encode(text, add_special_tokens=special).ids


def test_big_text_leaves_other_threads_running(tokenizer):
    text = TEXT * (600_000 // len(TEXT))
    tokenizer.encode(text[: BIG_TEXT_CHARS + 1])  # the worker process is up
    start = time.perf_counter()
    tokenizer.backend.encode(text)
    in_process = time.perf_counter() - start
    gaps: list[float] = []
    done = threading.Event()

    def tick():
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    with gc_paused():  # the session heap's full collections would be gaps here: not the encode's doing
        ticker.start()
        try:
            tokenizer.encode(text)
        finally:
            done.set()
            ticker.join()
    # In process the encode holds the GIL throughout; through the worker the ticker keeps ticking.
    assert max(gaps) < max(0.1, in_process / 4), (max(gaps), in_process)


class _NoEncode:
    def encode(self, *args, **kwargs):
        raise AssertionError("encoded a text that cannot fit")


def test_text_that_cannot_fit_is_refused_before_encoding(tokenizer, monkeypatch):
    monkeypatch.setattr(tokenizer, "max_input_tokens", 64)
    limit = tokenizer.max_input_chars
    monkeypatch.setattr(tokenizer, "_backend", _NoEncode())
    with pytest.raises(ContextOverflow) as err:
        tokenizer.encode("x" * (limit + 1))
    assert err.value.param == "prompt" and "64" in str(err.value)


@pytest.mark.parametrize("text", [TEXT * 50, "a" * 5000, "é" * 3000, " " * 9000, "\n" * 4000, "<s>" * 2000,
                                  "".join(map(chr, range(32, 3000)))])
def test_the_length_bound_is_a_lower_bound_on_tokens(tokenizer, text):
    assert len(tokenizer.backend.encode(text).ids) * tokenizer.max_token_chars >= len(text)
