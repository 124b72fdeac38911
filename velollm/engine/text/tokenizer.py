"""Tokenizer: a `tokenizers.Tokenizer` plus the Hugging Face folder conventions around it.

`from_folder` reproduces what `transformers.AutoTokenizer.from_pretrained(folder)` (v5) builds, so
that `encode(text)` gives the same ids without importing transformers at run time.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, processors

from velollm.engine.text.chat_template import render_chat_template, select_template
from velollm.engine.text.encode_worker import EncodeWorker
from velollm.engine.text.template_layer import go_layer
from velollm.errors import ContextOverflow, ModelLoadError

logger = logging.getLogger(__name__)

# Texts longer than this are encoded in a child process (EncodeWorker): ~0.1 s of GIL on a slow CPU.
BIG_TEXT_CHARS = 32_768
# A normalizer can shrink text (NFC composes up to 3 characters into 1, some strip characters): the
# character bound on the token count allows for that.
_NORMALIZER_SLACK = 4

NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")

# Model types for which transformers ignores a declared `LlamaTokenizer` and loads tokenizer.json as
# is (their registered tokenizer is the generic backend, or the Hub class is known to be wrong).
_KEEP_TOKENIZER_JSON_MODEL_TYPES = frozenset(
    {"mistral", "mixtral", "ministral", "ministral3", "mistral3", "pixtral", "qwen2", "phi3", "phimoe",
     "internlm2", "internlm3", "llava", "llava_next", "nemotron", "jamba"}
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or a serialized AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _added_token(value: Any) -> AddedToken | None:
    if isinstance(value, str):
        return AddedToken(value, special=True, normalized=False)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        fields = {k: value[k] for k in _ADDED_TOKEN_FIELDS if k in value and k != "content"}
        return AddedToken(value["content"], **{**fields, "special": True})
    return None


def _ids(value: Any) -> set[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int) and not isinstance(v, bool)}
    return set()


def _uses_llama_class(cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], tokenizer_json: str) -> bool:
    # transformers 5 rebuilds a `LlamaTokenizer` from vocab + merges with its own Metaspace pipeline,
    # dropping tokenizer.json's normalizer/pre-tokenizer/decoder, unless the file is byte-level.
    declared = cfg.get("tokenizer_class") or model_cfg.get("tokenizer_class") or ""
    return (
        isinstance(declared, str)
        and declared.removesuffix("Fast") == "LlamaTokenizer"
        and "auto_map" not in cfg
        and model_cfg.get("model_type") not in _KEEP_TOKENIZER_JSON_MODEL_TYPES
        and '"ByteLevel"' not in tokenizer_json
    )


def _llama_class_backend(spec: dict[str, Any], cfg: Mapping[str, Any]) -> tokenizers.Tokenizer:
    """The backend `transformers.LlamaTokenizer.__init__` builds (same vocab/merges/post-processor)."""
    add_prefix_space = cfg.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    scheme = ("always" if cfg.get("legacy", False) else "first") if add_prefix_space else "never"
    model = {k: v for k, v in spec["model"].items() if k in ("type", "vocab", "merges")}
    model.update(dropout=None, unk_token=None, fuse_unk=True, byte_fallback=True, ignore_merges=False)
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if add_prefix_space:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    spec = {
        **spec,
        "model": model,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": False},
        "decoder": {"type": "Sequence", "decoders": decoders},
    }
    return tokenizers.Tokenizer.from_str(json.dumps(spec))


def _config_special_tokens(cfg: Mapping[str, Any]) -> list[Any]:
    """Named, extra and model-specific special tokens declared in tokenizer_config.json."""
    values = [cfg.get(name) for name in NAMED_SPECIAL_TOKENS]
    extra = cfg.get("extra_special_tokens") or cfg.get("additional_special_tokens") or []
    values += list(extra.values()) if isinstance(extra, dict) else list(extra)
    values += [v for k, v in cfg.items() if k.endswith("_token") and k not in NAMED_SPECIAL_TOKENS
               and isinstance(v, (str, dict))]
    return [v for v in values if v is not None]


def _add_config_tokens(backend: tokenizers.Tokenizer, cfg: Mapping[str, Any]) -> None:
    """Register the added/special tokens tokenizer_config.json declares, as transformers does."""
    present = {repr(t) for t in backend.get_added_tokens_decoder().values()}
    decoder = cfg.get("added_tokens_decoder") or {}
    pending = []
    for _, value in sorted(decoder.items(), key=lambda kv: int(kv[0])):
        if isinstance(value, dict) and isinstance(value.get("content"), str):
            token = AddedToken(value["content"], **{k: value[k] for k in _ADDED_TOKEN_FIELDS[1:] if k in value})
            if repr(token) not in present:
                pending.append(token)
    if pending:
        backend.add_tokens(pending)
    # Named/extra special tokens are (re-)registered as special, which also makes them split out of
    # text and skipped by decode(skip_special_tokens=True) even when they were plain vocab entries.
    specials = [t for t in (_added_token(v) for v in _config_special_tokens(cfg)) if t is not None]
    if specials:
        backend.add_special_tokens(specials)


def _chat_templates(folder: Path, cfg: Mapping[str, Any]) -> str | dict[str, str] | None:
    """chat_template.jinja / additional_chat_templates/*.jinja win over tokenizer_config.json."""
    templates: dict[str, str] = {}
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        templates["default"] = jinja.read_text(encoding="utf-8")
    extra_dir = folder / "additional_chat_templates"
    if extra_dir.is_dir():
        for file in sorted(extra_dir.glob("*.jinja")):
            templates[file.stem] = file.read_text(encoding="utf-8")
    if not templates:
        value = cfg.get("chat_template")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            templates = {t["name"]: t["template"] for t in value if isinstance(t, dict) and "name" in t}
    if not templates:
        return None
    if len(templates) == 1 and "default" in templates:
        return templates["default"]
    return templates


class Tokenizer:
    """Text <-> token ids, chat templates and special-token facts for one model."""

    # The Ollama store model's TEMPLATE layer (Go text/template): it renders the chats only without a jinja
    # template (go_layer), fill-in-the-middle prompts always (insert_layer); velollm/engine/text/template_layer.py.
    go_template: str | None = None

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        chat_template: str | Mapping[str, str] | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        eos_token_ids: Iterable[int] = (),
        add_bos: bool | None = None,
        add_eos: bool | None = None,
        special_tokens: Mapping[str, str] | None = None,
    ) -> None:
        """Wrap `backend`. `add_bos`/`add_eos` replace its post-processor when given (GGUF metadata);
        None keeps the post-processor as is. `special_tokens` (unk_token, pad_token, ...) are extra
        chat-template variables next to bos_token/eos_token."""
        self._backend = backend
        backend.no_truncation()
        backend.no_padding()
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = backend.token_to_id(bos_token) if bos_token is not None else None
        if add_bos is not None or add_eos is not None:
            self._set_post_processor(bool(add_bos), bool(add_eos))
        self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) else chat_template
        eos = set(eos_token_ids)
        if eos_token is not None and (eos_id := backend.token_to_id(eos_token)) is not None:
            eos.add(eos_id)
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        added = backend.get_added_tokens_decoder()
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self.vocab_size: int = max([backend.get_vocab_size(with_added_tokens=True), *(i + 1 for i in added)])
        self.max_input_tokens: int | None = None  # set by the engine: longer inputs are refused unread
        self._worker: EncodeWorker | None = None
        self._worker_lock = threading.Lock()
        self._template_vars = {**(special_tokens or {})}
        for name, value in (("bos_token", bos_token), ("eos_token", eos_token)):
            if value is not None:
                self._template_vars[name] = value

    @classmethod
    def from_folder(cls, path: str | Path, *, model_config: Mapping[str, Any] | None = None,
                    generation_config: Mapping[str, Any] | None = None) -> Tokenizer:
        """Load a Hugging Face model folder's tokenizer (tokenizer.json is required).

        `model_config` / `generation_config`: the folder's config.json / generation_config.json ({} when
        the file is absent) for a caller that has already read them; otherwise they are read here."""
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(f"{folder} has no tokenizer.json (a slow-only tokenizer is not supported)")
        cfg = _read_json(folder / "tokenizer_config.json")
        model_cfg = _read_json(folder / "config.json") if model_config is None else model_config
        text = tokenizer_file.read_text(encoding="utf-8")
        try:
            if _uses_llama_class(cfg, model_cfg, text):
                cfg = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", **cfg}
                backend = _llama_class_backend(json.loads(text), cfg)
            else:
                backend = tokenizers.Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises plain Exception on a malformed file
            raise ModelLoadError(f"cannot load {tokenizer_file}: {e}") from e
        _add_config_tokens(backend, cfg)
        special = {n: t for n in NAMED_SPECIAL_TOKENS if (t := _token_text(cfg.get(n))) is not None}
        if generation_config is None:
            generation_config = _read_json(folder / "generation_config.json")
        eos_ids = _ids(generation_config.get("eos_token_id"))
        eos_ids |= _ids(model_cfg.get("eos_token_id"))
        eos_ids |= _ids((model_cfg.get("text_config") or {}).get("eos_token_id"))
        return cls(
            backend,
            chat_template=_chat_templates(folder, cfg),
            bos_token=special.get("bos_token"),
            eos_token=special.get("eos_token"),
            eos_token_ids=eos_ids,
            special_tokens=special,
        )

    @property
    def backend(self) -> tokenizers.Tokenizer:
        return self._backend

    def _set_post_processor(self, add_bos: bool, add_eos: bool) -> None:
        pieces, special = ["$A:0"], []
        for flag, token, at_start in ((add_bos, self.bos_token, True), (add_eos, self.eos_token, False)):
            token_id = self._backend.token_to_id(token) if token is not None else None
            if flag and token_id is not None:
                pieces.insert(0 if at_start else len(pieces), f"{token}:0")
                special.append((token, token_id))
        self._backend.post_processor = processors.TemplateProcessing(single=" ".join(pieces), special_tokens=special)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens only where the post-processor adds them.

        With `max_input_tokens` set, a text that has more tokens for sure (by its length) is a ContextOverflow
        before any encoding (the Ollama API then cuts it from the ids of its ends: velollm.context.text_ends,
        each end within this limit); a big text is encoded in a child process (the GIL stays free meanwhile).
        """
        if self.max_input_tokens is not None and len(text) > self.max_input_chars:
            raise ContextOverflow(f"the input has {len(text)} characters, so more tokens than the context holds "
                                  f"({self.max_input_tokens})", param="prompt")
        if len(text) > BIG_TEXT_CHARS:
            with self._worker_lock:
                if self._worker is None:
                    self._worker = EncodeWorker(self._backend.to_str())
            return self._worker.encode(text, add_special_tokens)
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    @property
    def max_input_chars(self) -> int:
        """Characters beyond which a text surely has more than `max_input_tokens` tokens."""
        return (self.max_input_tokens or 0) * self.max_chars_per_token

    @property
    def max_chars_per_token(self) -> int:
        """Characters of input that surely hold one token or more (normalization may shrink a text)."""
        return self.max_token_chars * _NORMALIZER_SLACK

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The longest token's text: no token covers more characters of (normalized) input than this."""
        return max(1, *map(len, self._backend.get_vocab(with_added_tokens=True)))

    def close(self) -> None:
        """Ends the encode worker process, if one was started."""
        if self._worker is not None:
            self._worker.close()

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; ids the tokenizer does not know (padded embedding rows) are dropped."""
        n = self.vocab_size
        return self._backend.decode([i for i in ids if 0 <= i < n], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id) if 0 <= token_id < self.vocab_size else None

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special_ids

    @functools.cached_property
    def special_texts(self) -> frozenset[str]:
        """The special tokens as text (`<|eot_id|>`), as a template writes them."""
        return frozenset(self.decode([i], skip_special_tokens=False) for i in self._special_ids)

    @functools.cached_property
    def _added_special_text(self) -> tuple[str, str]:
        """The special tokens encode(..., add_special_tokens=True) puts before and after a text (a GGUF's BOS, per
        tokenizer.ggml.add_bos_token), as text. Ollama's Go templates write no BOS: its runner tokenizes the
        prompt with llama.cpp's add_special, which adds them; VeloLLM's chat prompts are encoded without, so a
        Go-rendered prompt carries them in its text."""
        plain = self._backend.encode("a", add_special_tokens=False).ids
        full = self._backend.encode("a", add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                before, after = full[:start], full[start + len(plain):]
                return (self.decode(before, skip_special_tokens=False) if before else "",
                        self.decode(after, skip_special_tokens=False) if after else "")
        return "", ""

    @functools.cached_property
    def byte_fallback_ids(self) -> frozenset[int]:
        """Ids of SentencePiece byte tokens (`<0xE2>`) when the model falls back to bytes.

        A run of them decodes as one unit (all U+FFFD if the run is not valid UTF-8), so text that
        ends in one is not final yet."""
        if not getattr(self._backend.model, "byte_fallback", False):
            return frozenset()
        vocab = self._backend.get_vocab(with_added_tokens=False)
        return frozenset(i for t, i in vocab.items() if len(t) == 6 and t.startswith("<0x") and t.endswith(">"))

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Render `messages` (and `tools`) with the model's chat template, as transformers does; a model
        with no jinja template but an Ollama TEMPLATE layer renders as Ollama does (Go template)."""
        go = go_layer(self) if chat_template is None else None
        if go is not None:
            from velollm.engine.text.go_template.chat import render_go_chat, think_values

            think = think_values(kwargs.get("enable_thinking"), kwargs.get("reasoning_effort"))
            before, after = self._added_special_text
            return before + render_go_chat(go, messages, tools=tools, think=think) + after
        if chat_template is not None and isinstance(self.chat_template, dict) and chat_template in self.chat_template:
            chat_template = self.chat_template[chat_template]
        template = chat_template or select_template(self.chat_template, has_tools=tools is not None)
        return render_chat_template(
            template,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self._template_vars,
            **kwargs,
        )

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> list[int]:
        """Token ids of the rendered chat; the template writes its own special tokens (no post-processor)."""
        text = self.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)
