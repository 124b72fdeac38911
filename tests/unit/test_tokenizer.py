"""Tokenizer.from_folder must encode and decode exactly as transformers' AutoTokenizer does."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import tokenizers

from velollm.engine.text.tokenizer import Tokenizer
from velollm.errors import ModelLoadError

transformers = pytest.importorskip("transformers")

FOLDERS = ["demo", "llama3", "llama3-no-post-processor", "mistral-metaspace", "llama2-metaspace-legacy",
           "llama2-normalizer", "mistral-normalizer", "qwen2", "qwen3"]

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "  leading spaces and trailing  ",
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # square\n\n\n\tprint(f(3))\n",
    "naïve café, crème brûlée — “quotes” … ½ ∑ ∫ ≠ Ωmega",
    "日本語のテキストと中文字符，한국어 텍스트.",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 keycap 1️⃣",
    "runs     of      spaces\n\n\n\n\nand newlines\r\n\r\nwindows",
    "special <s> tokens </s> in <|eot_id|> text <|im_start|>user\nhi<|im_end|> <|begin_of_text|>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "e\u0301 combining and \u00e9 precomposed, zero\u200bwidth, tab\tend",
    "1234567890 3.14159 -42 1e-9 0xDEADBEEF",
]


@pytest.fixture(scope="module")
def pairs(tokenizer_folders) -> dict[str, tuple[Tokenizer, object]]:
    from transformers import AutoTokenizer

    return {
        name: (Tokenizer.from_folder(folder), AutoTokenizer.from_pretrained(str(folder)))
        for name, folder in tokenizer_folders.items()
    }


@pytest.mark.parametrize("name", FOLDERS)
def test_encode_matches_transformers(pairs, name):
    ours, ref = pairs[name]
    for text in TEXTS:
        assert ours.encode(text) == ref(text).input_ids, text
        assert ours.encode(text, add_special_tokens=False) == ref(text, add_special_tokens=False).input_ids, text


@pytest.mark.parametrize("name", FOLDERS)
def test_decode_matches_transformers(pairs, name):
    ours, ref = pairs[name]
    rng = random.Random(name)
    for text in TEXTS:
        ids = ref(text).input_ids
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    for _ in range(50):
        ids = [rng.randrange(len(ref)) for _ in range(rng.randrange(1, 30))]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), ids


@pytest.mark.parametrize("name", FOLDERS)
def test_special_token_facts_match_transformers(pairs, name):
    ours, ref = pairs[name]
    assert ours.vocab_size == len(ref)
    assert ours.bos_token_id == ref.bos_token_id
    assert ref.eos_token_id in ours.eos_token_ids
    for token_id in ref.all_special_ids:
        assert ours.is_special(token_id), ref.convert_ids_to_tokens(token_id)
    assert ours.id_to_token(5) == ref.convert_ids_to_tokens(5)


def test_decode_skips_ids_beyond_the_vocabulary(pairs):
    ours, _ = pairs["demo"]
    ids = ours.encode("Hello world", add_special_tokens=False)
    padded = [ours.vocab_size, *ids, ours.vocab_size + 60, -1, 10**9]
    assert ours.decode(padded) == ours.decode(ids) == "Hello world"
    assert ours.id_to_token(ours.vocab_size) is None
    assert ours.id_to_token(-1) is None


def test_eos_ids_are_the_union_of_all_sources(tokenizer_folders):
    tok = Tokenizer.from_folder(tokenizer_folders["qwen2"])
    ids = {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")}
    assert tok.eos_token_ids == ids  # tokenizer_config has <|im_end|>, generation_config adds <|endoftext|>
    demo = Tokenizer.from_folder(tokenizer_folders["demo"])
    assert demo.eos_token_ids == {demo.token_to_id("<|eot_id|>"), demo.token_to_id("<|end_of_text|>")}


def test_llama3_bos_comes_from_the_post_processor_only(pairs):
    # tokenizer_config says add_bos_token=true in both folders; transformers 5 ignores it when a
    # tokenizer.json exists, so only the folder whose post-processor adds BOS gets one.
    with_pp, _ = pairs["llama3"]
    without_pp, _ = pairs["llama3-no-post-processor"]
    assert with_pp.encode("hi")[0] == with_pp.bos_token_id
    assert with_pp.bos_token_id not in without_pp.encode("hi")


def test_constructor_add_bos_overrides_post_processor(tokenizer_folders):
    backend = tokenizers.Tokenizer.from_file(str(tokenizer_folders["llama3-no-post-processor"] / "tokenizer.json"))
    tok = Tokenizer(backend, chat_template=None, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                    eos_token_ids={1}, add_bos=True, add_eos=True)
    bos, eot = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|eot_id|>")
    ids = tok.encode("hello")
    assert ids[0] == bos and ids[-1] == eot and len(ids) > 2
    assert tok.encode("hello", add_special_tokens=False) == ids[1:-1]
    assert tok.eos_token_ids == {1, eot}


def test_chat_template_jinja_file_wins(tokenizer_folders, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tokenizer_folders["qwen2"], folder)
    (folder / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.content }}]{% endfor %}")
    tok = Tokenizer.from_folder(folder)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"


def test_named_chat_templates_list(tokenizer_folders, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tokenizer_folders["qwen2"], folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "default", "template": "D{{ messages[0].content }}"},
                            {"name": "tool_use", "template": "T{{ tools | length }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer.from_folder(folder)
    msgs = [{"role": "user", "content": "x"}]
    assert tok.apply_chat_template(msgs) == "Dx"
    assert tok.apply_chat_template(msgs, tools=[{"type": "function"}]) == "T1"


def test_missing_or_broken_tokenizer_is_a_load_error(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        Tokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError):
        Tokenizer.from_folder(tmp_path)
