"""TextEnds: Ollama's token cut of a text too long to tokenize, from the ids of its two ends.

The tokenizer refuses a text by its length alone when it surely has more tokens than the context holds
(velollm.engine.text.tokenizer: it is never read, so a huge body stays cheap). On the Ollama API such a
prompt is cut as Ollama's runner cuts any prompt over the context (velollm.context.token_cut): the first
`num_keep` ids and the tail stay. Those are the ids of the text's ends, so only its ends are tokenized:
a head that surely holds the kept ids and a tail that surely holds the rest, each a few ids more (a piece
cut mid-word differs from the whole only in its ids at the cut, and those go). The number of ids of the
whole is exact when the pieces meet and estimated from their ids per character otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from velollm.context.token_cut import TokenCut, ollama_cut

logger = logging.getLogger(__name__)

MARGIN_IDS = 32  # ids beyond those kept at each piece's inner end


@dataclass(frozen=True)
class TextEnds:
    head_ids: list[int]
    tail_ids: list[int]
    num_ids: int  # the whole text's ids (estimated when the pieces do not meet)
    meet: bool  # the pieces are the whole text: head_ids + tail_ids are its ids

    def with_prefix(self, prefix_ids: Sequence[int]) -> TextEnds:
        """The ends of `prefix_ids` followed by the text (an /api/generate `context`)."""
        return TextEnds(list(prefix_ids) + self.head_ids, self.tail_ids, self.num_ids + len(prefix_ids), self.meet)

    def cut(self, limit: int, num_keep: int) -> tuple[list[int], TokenCut | None]:
        """The ids that stay when the whole is cut to `limit` ids (token_cut.ollama_cut), and the cut (None:
        the whole has no more ids than that)."""
        if self.meet:
            ids = self.head_ids + self.tail_ids
            cut = ollama_cut(len(ids), limit, num_keep)
            return (ids, None) if cut is None else (cut.apply(ids), cut)
        if limit < 1:
            raise ValueError(f"a prompt cannot be cut to {limit} tokens")
        keep = min(limit if num_keep < 0 else num_keep, limit - 1, len(self.head_ids))
        tail = min(limit - keep, len(self.tail_ids))
        return self.head_ids[:keep] + self.tail_ids[len(self.tail_ids) - tail:], TokenCut(keep, self.num_ids - tail)


def text_ends(tokenizer: Any, text: str, limit: int, num_keep: int, add_special_tokens: bool) -> TextEnds:
    """The ends of `text` that a cut to `limit` ids keeps (`num_keep` leading ids, Ollama's option), each
    piece within the tokenizer's length limit. `add_special_tokens` as for the whole (the head gets them)."""
    per_id = tokenizer.max_chars_per_token  # characters that surely hold one id
    most = tokenizer.max_input_chars
    keep = min(limit if num_keep < 0 else num_keep, limit - 1)
    num_head = min(len(text), (keep + MARGIN_IDS) * per_id, most)
    tail_start = max(num_head, len(text) - min((limit - keep + MARGIN_IDS) * per_id, most))
    head_ids = tokenizer.encode(text[:num_head], add_special_tokens=add_special_tokens)
    tail_ids = tokenizer.encode(text[tail_start:], add_special_tokens=False)
    num_ids = len(head_ids) + len(tail_ids)
    gap = tail_start - num_head
    if gap:
        num_ids += round(gap * num_ids / (len(text) - gap))
    return TextEnds(head_ids, tail_ids, num_ids, gap == 0)


def cut_text(tokenizer: Any, text: str, budget: int, num_keep: int, *, add_special_tokens: bool,
             context_len: int, prefix_ids: Sequence[int] = ()) -> tuple[list[int], TokenCut | None, int]:
    """`prefix_ids` and `text` (too long to tokenize; it continues them, so its ids' BOS goes) cut to `budget` ids (at least one) as Ollama's runner cuts
    a prompt, logged as it logs it: the ids that stay, the cut and the whole's number of ids."""
    limit = max(1, budget)
    ends = text_ends(tokenizer, text, limit, max(0, num_keep - len(prefix_ids)) if num_keep >= 0 else num_keep,
                     add_special_tokens)
    if prefix_ids:  # the text continues them: its BOS goes (as the whole's would)
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None and ends.head_ids[:1] == [bos]:
            ends = replace(ends, head_ids=ends.head_ids[1:], num_ids=ends.num_ids - 1)
        ends = ends.with_prefix(prefix_ids)
    ids, cut = ends.cut(limit, num_keep)
    if cut is not None:
        logger.warning("truncating input prompt: limit=%d prompt=%d (estimated from its ends) keep=%d new=%d "
                       "(context %d)", limit, ends.num_ids, cut.keep, len(ids), context_len)
    return ids, cut, ends.num_ids
