"""LinguaCompressor: LLMLingua-2's token-level compression of one text with a local classifier.

The selection is PromptCompressor.compress_prompt_llmlingua2's for one context (microsoft/LLMLingua,
llmlingua/prompt_compressor.py __chunk_context and __compress): the text is cut into chunks of at most
510 classifier tokens, each ending at a chunk-end token ("." or "\\n") where one is in reach; each token's
keep probability is the softmax of its label 1; a word's is the mean of its tokens'; words weigh as
many target-model tokens as they hold, and those above the (100 * (1 - rate) + 1)th percentile stay,
joined back by the classifier tokenizer's decoder. Force tokens always stay (those that are not one
classifier token travel as [NEWi] tokens, which LLMLingua-2's checkpoints have rows for), and with
`force_reserve_digit` so do words with a digit.

Where LLMLingua counts with tiktoken's gpt-3.5 encoding, `count_tokens` counts with the tokenizer of
the model the prompt is for (VeloLLM's served model); a chunk without words (LLMLingua raises) stays empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from velollm.context.lingua_words import WordRules
from velollm.embed.token_classifier import ClassifierFolder, TokenClassifier
from velollm.errors import ModelLoadError, UnsupportedModel

logger = logging.getLogger(__name__)

MAX_SEQ_LEN = 512  # LLMLingua-2's window, [CLS] and [SEP] included
MAX_FORCE_TOKENS = 100  # [NEW0] ... [NEW99], as LLMLingua-2 adds them
MAX_BATCH_CHUNKS = 16
DEFAULT_FORCE_TOKENS = ("\n", ".", "?", "!", ",")
CHUNK_END_TOKENS = (".", "\n")
# Per family: the tokens TokenClfDataset frames a chunk with, and the special tokens words skip.
FRAMES = {"bert": ("[CLS]", "[SEP]", frozenset({"[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"})),
          "xlm-roberta": ("<s>", "</s>", frozenset({"<s>", "</s>", "<unk>", "<pad>", "<mask>"}))}


@dataclass(frozen=True)
class LinguaOptions:
    force_tokens: tuple[str, ...] = DEFAULT_FORCE_TOKENS
    force_reserve_digit: bool = True
    chunk_end_tokens: tuple[str, ...] = CHUNK_END_TOKENS
    drop_consecutive: bool = False  # a force token repeated with nothing kept between: one copy stays

    def __post_init__(self) -> None:
        if len(self.force_tokens) > MAX_FORCE_TOKENS:
            raise ValueError(f"at most {MAX_FORCE_TOKENS} force tokens, got {len(self.force_tokens)}")


def lingua_folder(folder: ClassifierFolder) -> ClassifierFolder:
    """`folder`, when LLMLingua-2's word rules know its tokenizer family."""
    if folder.model_type not in FRAMES:
        raise UnsupportedModel(f"{folder.path}: model_type {folder.model_type!r}: LLMLingua-2's word rules know "
                               f"bert (WordPiece) and xlm-roberta (SentencePiece) classifiers")
    return folder


class LinguaCompressor:
    def __init__(self, classifier: TokenClassifier, tokenizer, family: str,
                 options: LinguaOptions = LinguaOptions()) -> None:
        """`tokenizer`: the classifier's tokenizers.Tokenizer; [NEWi] tokens are added to it when absent."""
        from tokenizers import AddedToken

        self.classifier = classifier
        self.tokenizer = tokenizer
        self.family = family
        self.options = options
        self.cls_token, self.sep_token, special = FRAMES[family]
        self.unk_id = tokenizer.token_to_id("[UNK]" if family == "bert" else "<unk>") or 0
        stand_ins = [f"[NEW{i}]" for i in range(MAX_FORCE_TOKENS)]
        tokenizer.add_special_tokens([AddedToken(t, special=True) for t in stand_ins])
        if tokenizer.get_vocab_size(with_added_tokens=True) > classifier.encoder.config.vocab_size:
            raise ModelLoadError(f"the classifier has {classifier.encoder.config.vocab_size} token rows, its "
                                 f"tokenizer with LLMLingua-2's [NEWi] tokens needs "
                                 f"{tokenizer.get_vocab_size(with_added_tokens=True)}: no LLMLingua-2 checkpoint")
        token_map = {t: stand_ins[i] for i, t in enumerate(options.force_tokens) if len(self.tokenize(t)) != 1}
        self.rules = WordRules(family, special, options.force_tokens, token_map)
        ends = set(options.chunk_end_tokens)
        self.chunk_end_tokens = frozenset(ends | {token_map[c] for c in ends if c in token_map})
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, path: Path | str, device: str = "cpu",
                    options: LinguaOptions = LinguaOptions()) -> LinguaCompressor:
        from velollm.engine.text.tokenizer import Tokenizer

        folder = lingua_folder(ClassifierFolder.inspect(path))
        tokenizer = Tokenizer.from_folder(folder.path, generation_config={}).backend
        tokenizer.no_truncation()
        tokenizer.no_padding()
        model = TokenClassifier.load(folder, device)
        logger.info("context compressor: %s (%s, %d layers)", folder.path, folder.config.model_type,
                    folder.config.num_hidden_layers)
        return cls(model, tokenizer, folder.model_type, options)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        decoder = self.tokenizer.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def chunks(self, text: str) -> list[str]:
        """`text` (force tokens already [NEWi]) in pieces of at most MAX_SEQ_LEN - 2 tokens, each ending at
        the last chunk-end token in reach (LLMLingua's __chunk_context)."""
        max_len = MAX_SEQ_LEN - 2
        tokens = self.tokenize(text)
        n, start, out = len(tokens), 0, []
        while start < n:
            if start + max_len > n - 1:
                out.append(self.detokenize(tokens[start:n]))
                break
            end = start + max_len
            for j in range(end - start):
                if tokens[end - j] in self.chunk_end_tokens:
                    end -= j
                    break
            out.append(self.detokenize(tokens[start:end + 1]))
            start = end + 1
        return out

    def compress(self, text: str, rate: float, count_tokens: Callable[[str], int] | None = None) -> str:
        """`text` with about `rate` of its (target-model) tokens kept; rate >= 1 keeps it whole."""
        count = count_tokens or (lambda word: len(self.tokenize(word)))
        for original, stand_in in self.rules.token_map.items():
            text = text.replace(original, stand_in)
        chunks = self.chunks(text)
        reduce_rate = max(0.0, 1.0 - rate)
        if reduce_rate <= 0:
            return "".join(self.rules.restore(c) for c in chunks)
        kept = []
        for start in range(0, len(chunks), MAX_BATCH_CHUNKS):
            batch = chunks[start:start + MAX_BATCH_CHUNKS]
            ids = [self.frame(c) for c in batch]
            for chunk_ids, probs in zip(ids, self.keep_probs(ids)):
                tokens = [self.tokenizer.id_to_token(i) for i in chunk_ids]
                kept.append(self.select(tokens, probs, reduce_rate, count))
        return "".join(kept)

    def frame(self, chunk: str) -> list[int]:
        """The chunk's ids between [CLS] and [SEP], cut at MAX_SEQ_LEN (TokenClfDataset). A piece out of
        the vocabulary (a Unigram tokenizer names it by its text) is the unknown token, so its word is
        skipped as LLMLingua skips [UNK]."""
        tokens = ([self.cls_token] + self.tokenize(chunk) + [self.sep_token])[:MAX_SEQ_LEN]
        ids = [self.tokenizer.token_to_id(t) for t in tokens]
        return [self.unk_id if i is None else i for i in ids]

    def keep_probs(self, ids: list[list[int]]) -> list[list[np.float32]]:
        """Per token, the classifier's probability of label 1 (keep)."""
        with self._lock:
            logits = self.classifier.logits(ids)
        return [list(torch.softmax(x, dim=-1)[:, 1].numpy()) for x in logits]

    def select(self, tokens: list[str], probs: list[np.float32], reduce_rate: float,
               count: Callable[[str], int]) -> str:
        words, token_probs = self.rules.merge(tokens, probs, self.options.force_reserve_digit)
        word_probs = [sum(p) / len(p) for p in token_probs]
        if not words:
            return ""
        if self.options.drop_consecutive:
            self._unforce_repeats(words, word_probs, reduce_rate)
        weighted = [p for word, p in zip(words, word_probs) for _ in range(count(word))]
        if not weighted:
            return ""
        threshold = np.percentile(weighted, int(100 * reduce_rate + 1))
        keep: list[str] = []
        for word, p in zip(words, word_probs):
            if p > threshold or (threshold == 1.0 and p == threshold):
                if not (self.options.drop_consecutive and word in self.options.force_tokens and keep
                        and keep[-1] == word):
                    keep.append(word)
        return self.detokenize(keep)

    def _unforce_repeats(self, words: list[str], word_probs: list, reduce_rate: float) -> None:
        """drop_consecutive: a force token equal to the previous one, with no word above the (unweighted)
        threshold between them, gets probability 0."""
        threshold = np.percentile(word_probs, int(100 * reduce_rate))
        between, prev = False, None
        for i, (word, p) in enumerate(zip(words, word_probs)):
            if word in self.options.force_tokens:
                if between:
                    between = False
                elif word == prev:
                    word_probs[i] = 0.0
                prev = word
            else:
                between |= p > threshold
