"""Long conversations: what happens when a chat outgrows the context (error, truncate, compress), and the
prefetch that keeps the next turn's prompt in the prefix cache (turn_cache.py; next_turn.py renders the next
turn's prefix as the template rewrites the answer, for a background prefill) (compress: compressor.py's lossless steps, then
an optional LLMLingua-2 token classifier, lingua*.py), and the model side of it: evicted models
parked in host memory (parked_models.py) and predicted models loaded ahead (model_prefetch.py); one noun
per file."""

from velollm.context.overflow import MODES, parse_overflow
from velollm.context.report import ContextReport
from velollm.context.turns import Turns

__all__ = ["MODES", "ContextReport", "Turns", "parse_overflow"]
