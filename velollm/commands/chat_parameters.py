"""`/set parameter NAME VALUE...` in `velollm run`: each value typed as Ollama's api.FormatParams types it."""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from velollm.wire.go_format import go_float

_INTS = frozenset({"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
                   "main_gpu", "num_thread"})
_FLOATS = frozenset({"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                     "frequency_penalty"})
_BOOLS = frozenset({"use_mmap"})
_STRINGS = frozenset({"context_overflow"})  # VeloLLM's own option (velollm/context)
# strconv.ParseBool's words, exactly (not case-folded: "tRuE" is an error)
_BOOL_WORDS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
               "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.ParseInt(s, 10, 64): ASCII digits, no separators or spaces
_GO_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_GO_HEX = re.compile(r"[+-]?0[xX](_?[0-9a-fA-F])*(\.(_?[0-9a-fA-F])*)?[pP][+-]?[0-9]+(_[0-9]+)*")
_GO_SPECIAL = re.compile(r"[+-]?(inf|infinity)|nan", re.IGNORECASE)


def format_parameter(name: str, values: list[str]) -> Any:
    """The option value `/set parameter` sends; ValueError with Ollama's message when it is not one."""
    shown = f"[{' '.join(values)}]"  # Go's %s of a []string
    if name == "stop":
        return list(values)
    if name in _INTS:
        if not _GO_INT.fullmatch(values[0]) or not -(2**63) <= int(values[0]) < 2**63:
            raise ValueError(f"invalid int value {shown}")
        return int(values[0])
    if name in _FLOATS:
        value = _go_float32(values[0])
        if value is None:
            raise ValueError(f"invalid float value {shown}")
        if not math.isfinite(value):  # strconv takes it; the request's encoding/json then refuses it
            raise ValueError(f"json: unsupported value: {go_float(value)}")
        return value
    if name in _BOOLS:
        if values[0] not in _BOOL_WORDS:
            raise ValueError(f"invalid bool value {shown}")
        return _BOOL_WORDS[values[0]]
    if name in _STRINGS:
        return values[0]
    raise ValueError(f"unknown parameter '{name}'")


def _go_float32(text: str) -> float | None:
    """strconv.ParseFloat(text, 32): a decimal or hexadecimal float, inf/infinity/nan in any case; None for
    what Go refuses, a value beyond float32's range included."""
    if _GO_SPECIAL.fullmatch(text):
        return float(text.lower().replace("infinity", "inf"))
    if _GO_DECIMAL.fullmatch(text):
        value = float(text)
    elif _GO_HEX.fullmatch(text):
        value = float.fromhex(text.replace("_", ""))
    else:
        return None
    rounded = struct.unpack("f", struct.pack("f", value))[0]
    return None if math.isinf(rounded) else value  # Go's ErrRange: no float32 holds it
