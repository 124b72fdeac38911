"""Where `--context-compressor` finds its LLMLingua-2 classifier: a folder, or a repo id already in the
local Hugging Face cache (never downloaded)."""

from __future__ import annotations

from pathlib import Path

from velollm.context.lingua import lingua_folder
from velollm.embed.token_classifier import ClassifierFolder
from velollm.errors import VeloLLMError

KNOWN_REPOS = ("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank",
               "microsoft/llmlingua-2-xlm-roberta-large-meetingbank")


def resolve_compressor_folder(spec: str, hub: Path | None = None) -> ClassifierFolder:
    """The checked folder for `spec`; ValueError with what is wrong (the server then does not start)."""
    from velollm.engine.loader import hf_cache

    path = Path(spec).expanduser()
    if not path.exists() and hf_cache.is_repo_id(spec):
        snapshot = hf_cache.snapshot_folder(spec, hub)
        if snapshot is None:
            where = hub if hub is not None else hf_cache.hub_dir()
            raise ValueError(f"--context-compressor {spec}: not in the local Hugging Face cache ({where}); VeloLLM "
                             f"never downloads it: put it there (huggingface-cli download {spec}) or give a folder")
        path = snapshot
    elif not path.exists():
        raise ValueError(f"--context-compressor {spec}: no such folder (an LLMLingua-2 model folder, or one of "
                         f"{list(KNOWN_REPOS)} in the local Hugging Face cache)")
    try:
        return lingua_folder(ClassifierFolder.inspect(path))
    except (VeloLLMError, ValueError) as e:
        raise ValueError(f"--context-compressor {spec}: {e}") from e
