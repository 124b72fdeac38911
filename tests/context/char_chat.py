"""A one-character-per-token tokenizer and a plain chat template: context tests count tokens as characters."""

from __future__ import annotations

DOC = "A long tool output line with facts and numbers 1234. " * 10


class CharTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(map(chr, ids))


def render(messages) -> str:
    return "".join(f"<{m['role']}>{m.get('content') or ''}" for m in messages) + "<assistant>"
