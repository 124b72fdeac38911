"""A store model's own options (its params layer), checked before a request on the model runs.

Ollama parses the params layer into its typed Options when it loads the model (Options.FromMap: a null is
skipped, a value of the wrong type is an error whatever the request sends). The layer is input VeloLLM does not
control (written by an older VeloLLM or another tool), so a bad one is a 400 that names the model and the
parameter, never a 500; /api/show still prints it as stored.
"""

from __future__ import annotations

import sys
from typing import Any

from velollm.api.protocol_ollama import sampling_from_options
from velollm.errors import InvalidRequest


def model_options(name: str, options: dict[str, Any], layer_error: str = "") -> dict[str, Any]:
    """The params layer's options, nulls dropped; InvalidRequest naming `name` and the bad parameter otherwise."""
    if layer_error:
        raise InvalidRequest(f"model {name!r} cannot run: {layer_error}", param="model")
    defaults = {key: value for key, value in options.items() if value is not None}
    for key, value in defaults.items():
        if key == "stop" and not isinstance(value, list):  # Ollama's []string field given anything else
            _refuse(name, key, f"must be an array of strings, got {type(value).__name__}")
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, int) and not -sys.float_info.max <= v <= sys.float_info.max for v in values):
            _refuse(name, key, "is an integer no float64 holds")  # Ollama's JSON decoder refuses the layer
    try:
        sampling_from_options({}, defaults, None, None)
    except InvalidRequest as exc:
        error = exc
    else:
        return defaults
    _refuse(name, (error.param or "?").removeprefix("options."), str(error).removeprefix(error.param or "").strip())
    raise AssertionError("unreachable")


def _refuse(name: str, key: str, why: str) -> None:
    raise InvalidRequest(f"model {name!r} has an invalid parameter in its params layer: {key} {why} "
                         f"(fix it with `ollama create`, or remove the model)", param="model")
