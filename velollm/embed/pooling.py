"""Pooling: token states of packed sequences -> one vector per sequence (sentence-transformers' modes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

POOLING_MODES = ("mean", "cls", "last", "max", "mean_sqrt_len")
# sentence-transformers 1_Pooling/config.json flags -> our mode (only one may be set).
_ST_FLAGS = {
    "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last",
    "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
# GGUF `<arch>.pooling_type` (llama.cpp's enum) -> our mode.
GGUF_POOLING = {1: "mean", 2: "cls", 3: "last"}


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {self.mode!r}")

    @classmethod
    def from_sentence_transformers(cls, config: dict, normalize: bool) -> Pooling:
        """From 1_Pooling/config.json (`pooling_mode` string or the pooling_mode_* flags)."""
        mode = config.get("pooling_mode")
        if mode is None:
            chosen = [ours for flag, ours in _ST_FLAGS.items() if config.get(flag)]
            if len(chosen) != 1:
                raise ValueError(f"1_Pooling/config.json must enable exactly one supported mode, got {chosen}")
            mode = chosen[0]
        return cls({"lasttoken": "last", "mean_sqrt_len_tokens": "mean_sqrt_len"}.get(mode, mode), normalize)

    def __call__(self, hidden: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        """hidden [num_tokens, H] of sequences laid end to end -> float32 [num_seqs, H], not normalised
        (`finish` applies the model's normalisation: Ollama's legacy /api/embeddings returns raw vectors)."""
        hidden = hidden.float()
        if len(seq_lens) == 1 and self.mode in ("mean", "mean_sqrt_len"):  # one question: no index tensors to build
            total = hidden.sum(0, keepdim=True)
            return total / (seq_lens[0] ** 0.5 if self.mode == "mean_sqrt_len" else seq_lens[0])
        if self.mode == "cls":
            starts = torch.tensor([0, *seq_lens[:-1]], device=hidden.device).cumsum(0)
            out = hidden[starts]
        elif self.mode == "last":
            out = hidden[torch.tensor(seq_lens, device=hidden.device).cumsum(0) - 1]
        elif self.mode == "max":
            out = torch.stack([part.max(0).values for part in hidden.split(seq_lens)])
        else:
            lens = torch.tensor(seq_lens, device=hidden.device)
            seq_index = torch.repeat_interleave(torch.arange(len(seq_lens), device=hidden.device), lens)
            sums = hidden.new_zeros(len(seq_lens), hidden.shape[1]).index_add_(0, seq_index, hidden)
            scale = lens.float().sqrt() if self.mode == "mean_sqrt_len" else lens.float()
            out = sums / scale[:, None]
        return out

    def finish(self, vectors: np.ndarray) -> np.ndarray:
        """Raw pooled vectors -> what the model card says to return (L2-normalised rows, or as they are)."""
        return l2_normalized(vectors) if self.normalize else vectors


def l2_normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (torch's F.normalize: a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
