"""What Ollama's sampler does with sampling options out of range (sample.NewSampler): a negative temperature
samples greedily, top_p and min_p are cut to [0, 1], and a top_p of 0 keeps the most likely token alone. A
client written against Ollama may send them (a slider's -1, a top_p of 0 for greedy), so the native route and
the proxy to an OpenAI-compatible upstream (which would refuse them) take them as Ollama does."""

from __future__ import annotations

import math
from typing import Any

TOP_P_FLOOR = 1e-9  # the smallest top_p kept: nucleus sampling keeps the most likely token alone, as Ollama's 0 does
_RANGES = {"temperature": (0.0, math.inf), "top_p": (TOP_P_FLOOR, 1.0), "min_p": (0.0, 1.0)}


def clamp_option(name: str, value: Any) -> Any:
    """Option `name`'s value as Ollama's sampler takes it: a finite number cut to the range it clamps to; any
    other value as given (a wrong type, NaN, an infinity: the caller's 400)."""
    bounds = _RANGES.get(name)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return value
    return min(max(value, bounds[0]), bounds[1])
