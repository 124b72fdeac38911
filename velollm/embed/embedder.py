"""Embedder: texts -> float32 vectors [n, dim], for the embeddings endpoints and the semantic cache.

Inputs are tokenized, sorted by length and cut into batches of at most `max_batch_tokens` padded
tokens, so that sequences of similar length run together; each batch travels packed (see
encoder.PackedBatch). One lock serialises forward passes: torch releases the GIL inside its ops, so
callers on worker threads still overlap their tokenization and the rest of their work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import torch

from velollm.embed.encoder import PackedBatch
from velollm.embed.packed_linear import can_pack, pack_linears
from velollm.embed.source import EmbeddingSource
from velollm.embed.tail_tokens import tail_ids, untruncated
from velollm.errors import ContextOverflow, InvalidRequest

logger = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 8192
MAX_BATCH_SEQS = 256


class Embedder:
    """A loaded embedding model. `embed(texts)` is safe to call from several threads at once."""

    def __init__(self, source: EmbeddingSource, device: str = "cpu", dtype: torch.dtype | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS) -> None:
        self.source = source
        self.info = source.info
        self.dim: int = source.dim
        self.max_tokens: int = source.max_tokens
        self.pooling = source.pooling
        self.device = device
        self.dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
        self.max_batch_tokens = max(max_batch_tokens, self.max_tokens)
        self._tokenizer = source.load_tokenizer()
        self._untruncated = None  # the tokenizer without its cut at max_tokens, for tail_tokens
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        longest = max(1, *map(len, self._tokenizer.get_vocab(with_added_tokens=True)))
        # Characters that surely hold more than max_tokens tokens: no token covers more than the longest
        # one (or a whole unknown word, < 128), and a normalizer shrinks text at most 4x. Text beyond it
        # cannot reach the truncated ids, so it is cut before encoding (a 10 MB input costs nothing).
        self.max_input_chars = self.max_tokens * max(longest, 128) * 4
        self._model = source.build(device, self.dtype)
        if source.kind == "encoder" and can_pack(device, self.dtype):
            pack_linears(self._model)  # weights laid out for oneDNN once, not at every matmul
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str], truncate: bool = True, keep_last: int | None = None,
                 add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids with the model's special tokens (unless `add_special_tokens` is false); inputs over
        `max_tokens` are cut to it, or raise ContextOverflow (naming the limit) when `truncate` is false.
        `keep_last` (at most max_tokens): each input's last that many ids instead (vLLM's left truncation)."""
        if keep_last is not None:
            if self._untruncated is None:  # copied on first use: most servers never see the extra
                self._untruncated = untruncated(self._tokenizer)
            return tail_ids(self._untruncated, texts, keep_last, add_special_tokens, self.max_input_chars)
        if not truncate:
            for i, text in enumerate(texts):
                if len(text) > self.max_input_chars:
                    raise ContextOverflow(f"input {i} exceeds the model's context length of {self.max_tokens} "
                                          "tokens", param="input")
        encodings = self._tokenizer.encode_batch([text[:self.max_input_chars] for text in texts],
                                                 add_special_tokens=add_special_tokens)
        if not truncate:
            for i, enc in enumerate(encodings):
                if enc.overflowing:
                    raise ContextOverflow(f"input {i} exceeds the model's context length of {self.max_tokens} "
                                          "tokens", param="input")
        return [enc.ids for enc in encodings]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim], normalised when the model says so (sentence-transformers' Normalize)."""
        return self.embed_ids(self.tokenize(texts))

    def embed_ids(self, ids: Sequence[Sequence[int]], raw: bool = False) -> np.ndarray:
        """Embed token-id sequences as given (no special tokens added); each must fit in max_tokens.
        raw: the pooled vectors before the model's normalisation."""
        self.check_ids(ids)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for batch_index in self._batches([len(s) for s in ids]):
            vectors = self._forward([list(ids[i]) for i in batch_index])
            out[batch_index] = vectors
        return out if raw else self.pooling.finish(out)

    def check_ids(self, ids: Sequence[Sequence[int]]) -> None:
        """Raise InvalidRequest / ContextOverflow for an empty, too long or out-of-vocabulary sequence."""
        vocab = self.vocab_size
        for i, seq in enumerate(ids):
            if not seq:
                raise InvalidRequest(f"input {i} is empty: nothing to embed", param="input")
            if len(seq) > self.max_tokens:
                raise ContextOverflow(f"input {i} has {len(seq)} tokens, over the model's context length of "
                                      f"{self.max_tokens}", param="input")
            if min(seq) < 0 or max(seq) >= vocab:
                # Token ids are the model's own; a client that tokenizes with tiktoken sends OpenAI's.
                raise InvalidRequest(f"input {i} holds a token id outside the vocabulary [0, {vocab}): token ids "
                                     "must be this model's own; send text instead of tiktoken ids (LangChain's "
                                     "OpenAIEmbeddings: check_embedding_ctx_length=False)", param="input")

    def _batches(self, lens: list[int]) -> list[list[int]]:
        order = sorted(range(len(lens)), key=lambda i: -lens[i])
        batches: list[list[int]] = []
        for i in order:  # longest first: a batch's first sequence sets its padded width
            current = batches[-1] if batches else None
            if current is None or len(current) >= MAX_BATCH_SEQS or (len(current) + 1) * lens[current[0]] > self.max_batch_tokens:
                batches.append([i])
            else:
                current.append(i)
        return batches

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        batch = PackedBatch.build(ids, self.device)
        with self._lock, torch.inference_mode():
            hidden = self._model(batch)
            pooled = self.pooling(hidden, batch.seq_lens)
        return pooled.cpu().numpy()
