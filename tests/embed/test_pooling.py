"""Pooling over packed sequences vs the same pooling done per padded sequence."""

from __future__ import annotations

import pytest
import torch

from velollm.embed.pooling import Pooling


def _reference(mode: str, parts: list[torch.Tensor]) -> torch.Tensor:
    rows = []
    for p in parts:
        rows.append({"mean": p.mean(0), "cls": p[0], "last": p[-1], "max": p.max(0).values,
                     "mean_sqrt_len": p.sum(0) / len(p) ** 0.5}[mode])
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["mean", "cls", "last", "max", "mean_sqrt_len"])
@pytest.mark.parametrize("normalize", [True, False])
def test_packed_pooling_matches_per_sequence(mode: str, normalize: bool):
    lens = [3, 1, 7, 2]
    hidden = torch.randn(sum(lens), 16)
    pooling = Pooling(mode, normalize)
    raw = pooling(hidden, lens)
    expected = _reference(mode, list(hidden.split(lens)))
    torch.testing.assert_close(raw, expected)  # pooled as computed: legacy /api/embeddings returns these
    if normalize:
        expected = torch.nn.functional.normalize(expected, dim=1)
    torch.testing.assert_close(torch.from_numpy(pooling.finish(raw.numpy())), expected)


def test_sentence_transformers_config():
    assert Pooling.from_sentence_transformers({"pooling_mode_cls_token": True}, False) == Pooling("cls", False)
    assert Pooling.from_sentence_transformers({"pooling_mode": "lasttoken"}, True) == Pooling("last", True)
    with pytest.raises(ValueError, match="exactly one"):
        Pooling.from_sentence_transformers({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, True)
    with pytest.raises(ValueError, match="pooling mode"):
        Pooling("weightedmean")
