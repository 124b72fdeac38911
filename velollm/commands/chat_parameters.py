"""`/set parameter NAME VALUE...` in `velollm run`: each value typed as Ollama's api.FormatParams types it."""

from __future__ import annotations

from typing import Any

_INTS = frozenset({"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
                   "main_gpu", "num_thread"})
_FLOATS = frozenset({"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                     "frequency_penalty"})
_BOOLS = frozenset({"use_mmap"})
_STRINGS = frozenset({"context_overflow"})  # VeloLLM's own option (velollm/context)
_BOOL_WORDS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def format_parameter(name: str, values: list[str]) -> Any:
    """The option value `/set parameter` sends; ValueError with Ollama's message when it is not one."""
    shown = f"[{' '.join(values)}]"  # Go's %s of a []string
    if name == "stop":
        return list(values)
    if name in _INTS:
        try:
            return int(values[0])
        except ValueError:
            raise ValueError(f"invalid int value {shown}") from None
    if name in _FLOATS:
        try:
            return float(values[0])
        except ValueError:
            raise ValueError(f"invalid float value {shown}") from None
    if name in _BOOLS:
        if values[0].lower() not in _BOOL_WORDS:
            raise ValueError(f"invalid bool value {shown}")
        return _BOOL_WORDS[values[0].lower()]
    if name in _STRINGS:
        return values[0]
    raise ValueError(f"unknown parameter '{name}'")
