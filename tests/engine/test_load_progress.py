"""Loading progress: the weight stream reports tensors, bytes and rate, at the end and on the way."""

from __future__ import annotations

import logging

import torch

from velollm.engine.loader import progress


def test_progress_records(monkeypatch, caplog):
    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)  # a record per tensor
    weights = [(f"w{i}", torch.zeros(10, 10)) for i in range(3)]
    with caplog.at_level(logging.INFO, logger=progress.logger.name):
        out = list(progress.track_progress(iter(weights), "m", total_params=400))
    assert [n for n, _ in out] == ["w0", "w1", "w2"]
    records = [r.load_progress for r in caplog.records if hasattr(r, "load_progress")]
    assert [p.num_tensors for p in records] == [1, 2, 3, 3] and records[-1].done
    assert records[1].num_bytes == 800 and records[1].fraction == 0.5 and records[-1].fraction == 1.0
    assert records[0].describe().startswith("loading m: 25%, 1 tensors, 0.0 MB in")
    assert records[-1].describe().startswith("loaded m: 3 tensors") and "MB/s" in records[-1].describe()


def test_engine_load_reports_progress(caplog, tmp_path):
    from velollm.config import EngineConfig
    from velollm.engine.llm_engine import LLMEngine

    with caplog.at_level(logging.INFO, logger=progress.logger.name):
        engine = LLMEngine.from_model("demo", EngineConfig(device="cpu", max_num_seqs=1, kv_cache_memory=16 << 20),
                                      cache_dir=str(tmp_path))
    engine.close()
    final = [r.load_progress for r in caplog.records if getattr(r, "load_progress", None) is not None][-1]
    assert final.done and final.num_tensors > 0
    # every parameter of the model went through the stream (tied embeddings would count once)
    assert final.num_params == engine.source.info.parameter_count
