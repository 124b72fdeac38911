"""The built-in `demo` model: a tiny random Llama with a real byte-level BPE tokenizer.

It exists for smoke tests: every layer of the engine runs, the text it writes is nonsense. The
folder is generated deterministically (fixed seed, sorted JSON) on first use and then reused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_NAME = "demo-v2"  # bump when the generated files change, so stale caches are not reused
SEED = 20240601
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
BOS, EOS_TEXT, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 64, 2, 4, 2, 128
MAX_POSITIONS = 8192

_CORPUS = """\
The river ran quietly past the old mill, where the miller's daughter counted sacks of grain
every morning before the sun climbed over the hills. She liked numbers: 12 sacks on Monday,
17 on Tuesday, and once, after a long rain, only 3. Her brother preferred stories, and he told
them to anyone who would listen, usually at the bakery, where bread cost two coins a loaf.

A small language model reads text one token at a time. It predicts the next token from the ones
before it, writes that token down, and repeats. When the model is large and well trained, the
words it writes are useful; when it is tiny and random, as this one is, they are nonsense. That
is fine for testing: the engine, the cache, and the scheduler do the same work either way.

def greet(name: str) -> str:
    \"\"\"Return a friendly greeting.\"\"\"
    if not name:
        raise ValueError("name must not be empty")
    return f"Hello, {name}! How are you today?"

for i in range(10):
    print(greet("world"), i * 2, [x for x in range(i)])

Weather report: clouds in the north, sunshine in the south, light winds from the west. Tomorrow
the temperature will rise to 21 degrees, with a chance of thunder in the evening. Please bring an
umbrella, a warm coat, and a good book. Questions? Write to the office; we answer every letter.

The system prompt says who the assistant is. The user asks a question, the assistant answers,
and sometimes the assistant calls a tool: a function with a name and JSON arguments such as
{"location": "Paris", "unit": "celsius"}. The tool replies with a result, and the conversation
goes on until the user is happy. Simple, clear, and honest answers are the best answers.

Recipe for a quick soup: chop two onions, three carrots and a handful of celery. Warm some olive
oil in a heavy pot, add the vegetables, and stir for five minutes. Pour in one litre of water or
stock, season with salt, pepper and thyme, then simmer for twenty minutes. Serve hot with bread.

Travel notes, day 4: we left the harbour at dawn, sailed north along the rocky coast, and reached
the lighthouse by noon. The keeper showed us his logbook: storms, ships, whales, and the names of
every visitor since 1952. At night the stars were so bright that nobody wanted to sleep.
"""

CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = '' %}\n"
    "{%- endif %}\n"
    "{%- if system_message or tools is not none %}\n"
    "    {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "    {%- if tools is not none %}\n"
    "        {{- 'You can call these functions. To call one, reply with JSON of the form '"
    " ~ '{\"name\": function name, \"parameters\": object of arguments}.\\n\\n' }}\n"
    "        {%- for tool in tools %}\n"
    "            {{- tool | tojson(indent=4) }}\n"
    "            {{- '\\n\\n' }}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- system_message ~ '<|eot_id|>' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] not in ['system', 'user', 'assistant', 'tool', 'ipython'] %}\n"
    "        {{- raise_exception('unsupported role: ' ~ message['role']) }}\n"
    "    {%- endif %}\n"
    "    {%- set role = 'ipython' if message['role'] == 'tool' else message['role'] %}\n"
    "    {{- '<|start_header_id|>' ~ role ~ '<|end_header_id|>\\n\\n' }}\n"
    "    {%- if message['content'] is string %}\n"
    "        {{- message['content'] | trim }}\n"
    "    {%- elif message['content'] is not none and message['content'] is defined %}\n"
    "        {%- for part in message['content'] %}\n"
    "            {%- if part['type'] == 'text' %}{{- part['text'] | trim }}{%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {%- if message['tool_calls'] is defined %}\n"
    "        {%- for call in message['tool_calls'] %}\n"
    "            {%- set fn = call['function'] if call['function'] is defined else call %}\n"
    "            {{- '{\"name\": \"' ~ fn['name'] ~ '\", \"parameters\": ' }}\n"
    "            {%- if fn['arguments'] is string %}{{- fn['arguments'] }}"
    "{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}\n"
    "            {{- '}' }}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "velollm"


def ensure_demo(cache_dir: Path | None = None) -> Path:
    """Return the demo model folder `<cache_dir>/<DEMO_NAME>`, generating it on first use.

    `cache_dir` defaults to `~/.cache/velollm` (the caller maps $VELOLLM_CACHE to it). The folder
    is written to a temporary sibling and renamed into place, so a reader never sees a partial
    model and concurrent first uses are safe.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / DEMO_NAME
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_NAME}.", dir=root))
    try:
        write_demo(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("created the demo model in %s", target)
    return target


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, min_frequency=1, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    # Special tokens go after the learned vocabulary, as in Llama 3.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
        ),
    ])
    return tok


def _weights(vocab_size: int, zero_rows: list[int]) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    head_dim = HIDDEN // HEADS

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * 0.02

    tensors = {"model.embed_tokens.weight": normal(vocab_size, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = torch.ones(HIDDEN)
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN)
        tensors[p + "self_attn.q_proj.weight"] = normal(HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * head_dim)
        tensors[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        tensors[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
    tensors["model.norm.weight"] = torch.ones(HIDDEN)
    lm_head = normal(vocab_size, HIDDEN)
    # Special tokens and padding rows get logit 0 while the best normal token's logit is positive, so
    # greedy decoding never stops early (or emits an id the tokenizer cannot decode).
    lm_head[zero_rows] = 0.0
    tensors["lm_head.weight"] = lm_head
    return tensors


def write_demo(folder: Path) -> None:
    """Write every file of the demo model into an existing empty `folder`."""
    from safetensors.torch import save_file

    tok = _train_tokenizer()
    num_tokens = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = -(-num_tokens // 64) * 64  # padded like real checkpoints' embedding matrices
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    eos_ids = [ids[EOT], ids[EOS_TEXT]]
    zero_rows = sorted(ids.values()) + list(range(num_tokens, vocab_size))
    save_file(_weights(vocab_size, zero_rows), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    _dump(folder / "config.json", {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "vocab_size": vocab_size,
        "bos_token_id": ids[BOS],
        "eos_token_id": eos_ids,
        "initializer_range": 0.02,
    })
    _dump(folder / "generation_config.json", {"bos_token_id": ids[BOS], "eos_token_id": eos_ids})
    _dump(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOT,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for t, i in ids.items()
        },
    })
