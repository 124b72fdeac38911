"""ServedModel: one natively served model; SourceView: a resolved model that is not loaded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class ServedModel:
    """One natively served model."""

    name: str
    engine: Any  # velollm.engine.async_engine.AsyncEngine, an EngineLease on one, or a SourceView
    spec: str = ""
    loaded_at: float = field(default_factory=time.time)
    load_duration_s: float = 0.0

    @property
    def dead(self) -> str | None:
        """Why the engine thread died (AsyncEngine.dead), else None: the ModelPool unloads such a model."""
        dead = getattr(self.engine, "dead", None)
        return dead if isinstance(dead, str) else None

    def shutdown(self) -> None:  # the ModelPool unloads through this
        self.engine.shutdown()

    def sleep(self) -> None:  # the ModelPool parks an evicted model through these (AsyncEngine.sleep)
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()
        self.loaded_at = time.time()


class SourceView:
    """A resolved model that is not loaded, with the engine attributes that /api/show and
    /v1/models/{id} read: Ollama answers those from the manifest without loading the model."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.model_config = source.config
        self.max_model_len = source.config.max_position_embeddings  # before --max-model-len lowers it
        # The tokenizer is read only for its template (capabilities): keep that, not the vocabulary.
        tokenizer = source.load_tokenizer()
        self.tokenizer = SimpleNamespace(chat_template=tokenizer.chat_template,
                                         go_template=getattr(tokenizer, "go_template", None))
