"""VeloLLM: vLLM performance with Ollama simplicity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velollm.outputs import RequestDelta, RequestOutput
from velollm.sampling_params import SamplingParams, StructuredOutput

if TYPE_CHECKING:
    from velollm.llm import LLM

__version__ = "0.1.0"
__all__ = ["LLM", "RequestDelta", "RequestOutput", "SamplingParams", "StructuredOutput", "__version__"]


def __getattr__(name: str):
    # Lazy so that `velollm serve --proxy-only` and the CLI start without importing torch.
    if name == "LLM":
        from velollm.llm import LLM

        return LLM
    raise AttributeError(name)
