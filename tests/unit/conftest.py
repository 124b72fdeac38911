"""Tokenizer folders shaped like real checkpoints' (Llama 3, Llama 2 / Mistral SentencePiece, Qwen2),
trained here on a small corpus, plus the built-in demo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from velollm.engine.loader.demo import ensure_demo

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paged attention stores keys and values in blocks.",
    "def main(argv: list[str]) -> int:\n    for i in range(10):\n        print(i, argv)\n    return 0\n",
    "Il était une fois un café près de la rivière; naïve façade, crème brûlée.",
    "Numbers 1234567890 and symbols !@#$%^&*()_+-=[]{};':\",./<>? are common in code.",
    "    Indented    text  with   runs of spaces\n\n\nand newlines\tand\ttabs.",
] * 20

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def _added(tok: Tokenizer) -> dict[str, dict]:
    return {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                 "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tok.get_added_tokens_decoder().items())
    }


def _byte_level(regex: str, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def build_llama3(folder: Path, *, post_processor: bool = True) -> Path:
    folder.mkdir(parents=True)
    tok = _byte_level(LLAMA3_REGEX, 600)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    if post_processor:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
    tok.save(str(folder / "tokenizer.json"))
    from velollm.engine.loader.demo import CHAT_TEMPLATE

    eos = [tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")]
    _dump(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "add_bos_token": True, "clean_up_tokenization_spaces": True, "model_max_length": 131072,
        "chat_template": CHAT_TEMPLATE, "added_tokens_decoder": _added(tok),
    })
    _dump(folder / "config.json", {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                   "bos_token_id": bos, "eos_token_id": eos, "vocab_size": 640})
    _dump(folder / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos})
    return folder


def _spm_tokenizer(*, legacy_normalizer: bool) -> Tokenizer:
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, show_progress=False))
    spec = json.loads(trained.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for token, _ in learned:
        vocab.setdefault(token, len(vocab))
    spec["model"].update(vocab=vocab, byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    spec["added_tokens"] = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])
    ]
    decoder = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
               {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]
    spec["decoder"] = {"type": "Sequence", "decoders": decoder}
    if legacy_normalizer:  # how older conversions of Llama 2 wrote it
        spec["pre_tokenizer"] = None
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    else:  # Mistral-style
        spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
        spec["normalizer"] = None
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def build_spm(folder: Path, *, model_type: str, legacy_normalizer: bool, legacy: bool | None = False) -> Path:
    folder.mkdir(parents=True)
    tok = _spm_tokenizer(legacy_normalizer=legacy_normalizer)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
           "chat_template": LLAMA2_TEMPLATE, "added_tokens_decoder": _added(tok)}
    if legacy is not None:
        cfg["legacy"] = legacy
    _dump(folder / "tokenizer_config.json", cfg)
    _dump(folder / "config.json", {"model_type": model_type, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 1024})
    return folder


def build_qwen2(folder: Path, model_type: str = "qwen2") -> Path:
    folder.mkdir(parents=True)
    tok = _byte_level(QWEN2_REGEX, 600)
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(folder / "tokenizer.json"))
    end, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    _dump(folder / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace", "split_special_tokens": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "clean_up_tokenization_spaces": False,
        "chat_template": QWEN25_TEMPLATE, "added_tokens_decoder": _added(tok), "model_max_length": 32768,
    })
    _dump(folder / "config.json", {"model_type": model_type, "architectures": ["Qwen2ForCausalLM"],
                                   "bos_token_id": end, "eos_token_id": im_end, "vocab_size": 704})
    _dump(folder / "generation_config.json", {"bos_token_id": end, "eos_token_id": [im_end, end]})
    return folder


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory) -> Path:
    return ensure_demo(tmp_path_factory.mktemp("velollm-cache"))


@pytest.fixture(scope="session")
def tokenizer_folders(tmp_path_factory, demo_folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {
        "demo": demo_folder,
        "llama3": build_llama3(root / "llama3"),
        "llama3-no-post-processor": build_llama3(root / "llama3-np", post_processor=False),
        "mistral-metaspace": build_spm(root / "mistral", model_type="mistral", legacy_normalizer=False),
        "llama2-metaspace-legacy": build_spm(root / "l2-legacy", model_type="llama", legacy_normalizer=False,
                                             legacy=True),
        "llama2-normalizer": build_spm(root / "l2-norm", model_type="llama", legacy_normalizer=True),
        "mistral-normalizer": build_spm(root / "m-norm", model_type="mistral", legacy_normalizer=True, legacy=None),
        "qwen2": build_qwen2(root / "qwen2"),
        "qwen3": build_qwen2(root / "qwen3", model_type="qwen3"),  # transformers rebuilds it as Qwen2Tokenizer
    }
