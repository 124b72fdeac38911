"""Words from classifier tokens, by LLMLingua-2's rules (llmlingua/utils.py is_begin_of_new_word,
get_pure_token, and PromptCompressor.__merge_token_to_word), for its two tokenizer families.

bert (WordPiece): a token continues the previous word when it starts with "##". xlm-roberta
(SentencePiece): a token starts a word when it starts with "▁" or is punctuation. A force token (or
its [NEWi] stand-in) always starts a word. Special tokens ([CLS], <s>, [UNK]...) are skipped.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class WordRules:
    family: str  # "bert" | "xlm-roberta"
    special_tokens: frozenset[str]
    force_tokens: tuple[str, ...]
    token_map: Mapping[str, str]  # force token -> its [NEWi] stand-in (those not one token by themselves)

    def __post_init__(self) -> None:
        if self.family not in ("bert", "xlm-roberta"):
            raise ValueError(f"family must be bert or xlm-roberta, got {self.family!r}")

    def pure(self, token: str) -> str:
        # LLMLingua strips with lstrip("##"), a set of characters: every leading "#" goes ("#" too).
        return token.lstrip("#") if self.family == "bert" else token.lstrip("▁")

    def begins_word(self, token: str) -> bool:
        stand_ins = set(self.token_map.values())
        if self.family == "bert":
            bare = token.lstrip("#")
            return bare in self.force_tokens or bare in stand_ins or not token.startswith("##")
        return token in string.punctuation or token in self.force_tokens or token in stand_ins \
            or token.startswith("▁")

    def restore(self, token: str) -> str:
        """[NEWi] stand-ins back to their force tokens (LLMLingua's replace_added_token)."""
        for original, stand_in in self.token_map.items():
            token = token.replace(stand_in, original)
        return token

    def merge(self, tokens: Sequence[str], probs: Sequence[float],
              force_reserve_digit: bool) -> tuple[list[str], list[list[float]]]:
        """Words and the keep probabilities of their tokens: a force token's is 1, and with
        `force_reserve_digit` so is a token with a digit. A word keeps its first token's spelling
        ("▁word", or a "##x" force token as is); continuation tokens are appended bare."""
        forced: Collection[str] = set(self.force_tokens) | set(self.token_map.values())
        words: list[str] = []
        word_probs: list[list[float]] = []
        for token, prob in zip(tokens, probs):
            if token in self.special_tokens:
                continue
            new_word = self.begins_word(token) or not words
            if new_word:
                if self.pure(token) in forced:
                    prob = 1.0
                token = self.restore(token)  # the digit test below sees "\n", not "[NEW0]"
            kept = 1.0 if force_reserve_digit and _DIGIT.search(token) else prob
            if new_word:
                words.append(token)
                word_probs.append([kept])
            else:
                words[-1] += self.pure(token)
                word_probs[-1].append(kept)
        return words, word_probs
