"""TokenClassifier: a BERT / XLM-R encoder with a per-token Linear head (BertForTokenClassification,
XLMRobertaForTokenClassification), as LLMLingua-2's compressors are; read from an HF folder.

The head is transformers' without its dropout (inference): logits = Linear(hidden, num_labels) of the
encoder's last hidden state, for every token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from velollm.embed.config import EncoderConfig
from velollm.embed.encoder import EncoderModel, PackedBatch
from velollm.embed.folder import read_json
from velollm.errors import ModelLoadError, ModelNotFound, UnsupportedModel

ARCHITECTURES = ("BertForTokenClassification", "XLMRobertaForTokenClassification",
                 "RobertaForTokenClassification")
HEAD = "classifier."


@dataclass(frozen=True)
class ClassifierFolder:
    """A token-classification folder, checked without reading its weights."""

    path: Path
    config: EncoderConfig
    num_labels: int
    model_type: str  # config.json's ("roberta" stays "roberta": its tokenizer is not XLM-R's)

    @classmethod
    def inspect(cls, path: Path | str) -> ClassifierFolder:
        path = Path(path)
        if not path.is_dir():
            raise ModelNotFound(f"{path} is not a folder")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} has no config.json")
        raw = read_json(path / "config.json")
        architectures = raw.get("architectures") or []
        if not any(a in ARCHITECTURES for a in architectures):
            raise UnsupportedModel(f"{path}: architectures {architectures} hold no token classifier "
                                   f"(one of {list(ARCHITECTURES)})")
        if not (path / "tokenizer.json").is_file():
            raise ModelNotFound(f"{path} has no tokenizer.json")
        if not any(path.glob("*.safetensors")):
            if any(path.glob("pytorch_model*.bin")):
                raise UnsupportedModel(f"{path} holds pytorch_model.bin only: VeloLLM reads safetensors "
                                       f"(convert it: load it with transformers and save_pretrained it, "
                                       f"safe_serialization=True)")
            raise ModelNotFound(f"{path} has no model.safetensors")
        num_labels = len(raw.get("id2label") or {}) or int(raw.get("num_labels", 2))
        if num_labels < 2:
            raise UnsupportedModel(f"{path}: a keep/drop classifier needs 2 labels, config has {num_labels}")
        return cls(path, EncoderConfig.from_hf_config(raw), num_labels, str(raw.get("model_type")))


class TokenClassifier(nn.Module):
    def __init__(self, config: EncoderConfig, num_labels: int) -> None:
        super().__init__()
        self.encoder = EncoderModel(config)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    @classmethod
    def load(cls, folder: ClassifierFolder, device: str = "cpu") -> TokenClassifier:
        """The folder's weights (float32) on `device`, in eval mode."""
        from velollm.embed.weights import map_hf
        from velollm.engine.loader.safetensors import iter_safetensors

        with torch.device("meta"):
            model = cls(folder.config, folder.num_labels)
        model = model.to_empty(device=device).float()
        head: dict[str, torch.Tensor] = {}
        try:
            model.encoder.load_weights(map_hf(_split_head(iter_safetensors(folder.path, "float32"), head)))
        except KeyError as e:
            raise ModelLoadError(f"{folder.path}: unexpected tensor {e.args[0]!r} for a token classifier") from e
        if set(head) != {"weight", "bias"}:
            raise ModelLoadError(f"{folder.path}: no classifier.weight / classifier.bias (a token classifier's head)")
        with torch.no_grad():
            for name, tensor in head.items():
                param = getattr(model.classifier, name)
                if tuple(param.shape) != tuple(tensor.shape):
                    raise ModelLoadError(f"{folder.path}: classifier.{name} has shape {tuple(tensor.shape)}, "
                                         f"expected {tuple(param.shape)}")
                param.copy_(tensor)
        return model.eval()

    @torch.no_grad()
    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Logits of every packed token, float32 [num_tokens, num_labels]."""
        return self.classifier(self.encoder(batch)).float()

    def logits(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """One [len, num_labels] tensor per sequence (on the CPU)."""
        device = self.classifier.weight.device
        out = self(PackedBatch.build(ids, device)).cpu()
        return list(out.split([len(x) for x in ids]))


def _split_head(weights: Iterable[tuple[str, torch.Tensor]],
                head: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        if name.startswith(HEAD):
            head[name.removeprefix(HEAD)] = tensor
        else:
            yield name, tensor
