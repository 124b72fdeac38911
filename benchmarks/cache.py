"""Response cache benchmark: quality on the labeled pairs, lookup latency, and the replayed workload.

    python benchmarks/cache.py quality      # paraphrase hit rate, wrong-hit rate, context leaks (defaults)
    python benchmarks/cache.py calibrate    # the threshold model of velollm/cache/calibration.py (dev split)
    python benchmarks/cache.py latency      # lookup p50/p99 at 1k and 100k entries, exact and semantic
    python benchmarks/cache.py replay       # 40%-repeat chat stream against `velollm serve`, cache on vs off

Quality runs every pair through the real cache (keys, exact tier, embedding, index, verifier) with the
defaults of `velollm serve --semantic-cache`; each pair in a namespace of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_pairs import Pair, load_pairs  # noqa: E402

from velollm.cache.config import CacheConfig  # noqa: E402
from velollm.cache.key import cache_key, tenant_of  # noqa: E402
from velollm.cache.response_cache import ResponseCache  # noqa: E402

MODEL = "bench-model"
ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer"}, "finish_reason": "stop"}]}


def _body(context: list[dict], question: str) -> dict:
    return {"model": MODEL, "messages": [*context, {"role": "user", "content": question}], "temperature": 0}


async def _quality(cache: ResponseCache, pairs: list[Pair]) -> list[tuple[Pair, str]]:
    tenant = tenant_of(None)
    out = []
    for i, p in enumerate(pairs):
        first = cache_key("/v1/chat/completions", _body(p.context_first, p.first), tenant, namespace=f"pair{i}")
        await cache.store(first, ANSWER)
        second = cache_key("/v1/chat/completions", _body(p.context_second, p.second), tenant, namespace=f"pair{i}")
        out.append((p, (await cache.lookup(second)).kind))
    return out


def quality(args: argparse.Namespace) -> None:
    pairs = load_pairs()
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache.open(CacheConfig(Path(tmp), semantic=True))
        print(f"semantic threshold {cache.semantic.threshold:.3f} (--semantic-max-error "
              f"{cache.config.semantic_max_error}), embedder dim {cache.semantic.index.dim}")
        results = asyncio.run(_quality(cache, pairs))
    for split in ("dev", "heldout", "all"):
        rows = [(p, kind) for p, kind in results if split == "all" or p.split == split]
        para = [kind != "miss" for p, kind in rows if p.kind == "paraphrase"]
        near = [(p.kind, kind != "miss") for p, kind in rows if p.kind in ("number", "entity", "direction",
                                                                           "negation", "antonym")]
        ctx = [kind != "miss" for p, kind in rows if p.kind in ("system", "history")]
        by_kind = Counter(k for k, hit in near if hit)
        total = Counter(k for k, _ in near)
        print(f"{split:8s} paraphrase hit rate {sum(para) / len(para):6.1%} ({sum(para)}/{len(para)})  "
              f"wrong-hit rate {sum(h for _, h in near) / len(near):5.1%} ({sum(h for _, h in near)}/{len(near)}: "
              + ", ".join(f"{k} {by_kind[k]}/{total[k]}" for k in sorted(total)) + f")  "
              f"context leaks {sum(ctx)}/{len(ctx)}")
    if args.verbose:
        for p, kind in results:
            if (kind == "miss") == p.must_hit:
                print(f"  [{p.split}] {p.kind:10s} {kind:9s} {p.first!r} -> {p.second!r}")


def calibrate(args: argparse.Namespace) -> None:
    """Fits P(different question | cosine) on dev pairs that pass the verifier (logistic, L2)."""
    from velollm.cache.verifier import Verifier
    from velollm.embed import load_embedder

    embedder = load_embedder()
    verifier = Verifier()
    xs, ys = [], []
    for p in load_pairs():
        if p.split != "dev" or p.kind in ("system", "history") or not verifier.check(p.second, p.first).same:
            continue
        e = embedder.embed([p.first, p.second])
        xs.append(float(e[0] @ e[1]))
        ys.append(0.0 if p.must_hit else 1.0)
    x, y = np.array(xs), np.array(ys)
    # Newton steps on the standardized cosine with an L2 penalty (the classes are nearly separable);
    # --balanced weighs both classes alike instead of as often as they pass the verifier.
    w = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum()))) if args.balanced \
        else np.ones_like(y)
    mu, sd = x.mean(), x.std()
    z = np.stack([(x - mu) / sd, np.ones_like(x)], axis=1)
    theta = np.zeros(2)
    penalty = np.diag([args.l2, 0.0])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(z @ theta)))
        grad = z.T @ (w * (p - y)) + penalty @ theta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z + penalty
        theta = theta - np.linalg.solve(hess, grad)
    a, b = theta[0] / sd, theta[1] - theta[0] * mu / sd
    print(f"pairs passing the verifier: {len(y)} ({int(y.sum())} different questions)")
    print(f"P(different | cosine s) = 1 / (1 + exp(-({a:.3f} * s + {b:.3f})))")
    for eps in (0.005, 0.01, 0.02, 0.05, 0.1):
        print(f"  max error {eps:5.3f} -> threshold {(math.log(eps / (1 - eps)) - b) / a:.3f}")


def _percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


async def _latency(n: int, lookups: int) -> None:
    questions = [p.second for p in load_pairs() if p.kind == "paraphrase"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache.open(CacheConfig(Path(tmp), semantic=True, max_entries=n + 10))
        rng = np.random.default_rng(0)
        tenant = tenant_of(None)
        t0 = time.perf_counter()
        keys = []
        for i in range(n):  # one context (the worst case: every entry is a candidate); random unit vectors
            key = cache_key("/v1/chat/completions", _body([], f"question {i} {rng.integers(1 << 30)}"), tenant)
            v = rng.standard_normal(cache.semantic.index.dim).astype(np.float32)
            await cache.store(key, ANSWER, vector=v / np.linalg.norm(v))
            keys.append(key)
        fill_s = time.perf_counter() - t0
        exact, semantic = [], []
        for i in range(lookups):
            key = keys[int(rng.integers(n))]
            t = time.perf_counter()
            assert (await cache.lookup(key)).kind == "exact"
            exact.append(time.perf_counter() - t)
            miss = cache_key("/v1/chat/completions", _body([], questions[i % len(questions)]), tenant)
            t = time.perf_counter()
            await cache.lookup(miss)
            semantic.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(lookups):  # on the tier's own thread, as in the server
            cache.semantic.executor.submit(cache.semantic.embed, questions[i % len(questions)]).result()
        embed_only = (time.perf_counter() - t) / lookups
        vec = cache.semantic.executor.submit(cache.semantic.embed, questions[0]).result()
        t = time.perf_counter()
        for _ in range(lookups):
            cache.semantic.index.search(keys[0].context, vec)
        search_only = (time.perf_counter() - t) / lookups
        await cache.close()
    e50, e99 = _percentiles(exact)
    s50, s99 = _percentiles(semantic)
    print(f"{n:>7,} entries (filled in {fill_s:.1f} s): exact hit p50 {e50:.3f} ms p99 {e99:.3f} ms | "
          f"semantic miss (embed + search + verify) p50 {s50:.2f} ms p99 {s99:.2f} ms | "
          f"index search alone {search_only * 1000:.2f} ms, embedding alone {embed_only * 1000:.2f} ms (mean)")


def _machine() -> str:
    import os
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (other jobs on the machine count here)")


def latency(args: argparse.Namespace) -> None:
    print(_machine())
    for n in args.entries:
        asyncio.run(_latency(n, args.lookups))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("-v", "--verbose", action="store_true", help="list every pair the cache got wrong")
    c = sub.add_parser("calibrate")
    c.add_argument("--l2", type=float, default=0.1)
    c.add_argument("--balanced", action="store_true")
    lat = sub.add_parser("latency")
    lat.add_argument("--entries", type=int, nargs="+", default=[1_000, 100_000])
    lat.add_argument("--lookups", type=int, default=300)
    r = sub.add_parser("replay")
    from cache_replay import add_arguments, replay

    add_arguments(r)
    args = parser.parse_args()
    {"quality": quality, "calibrate": calibrate, "latency": latency, "replay": replay}[args.what](args)


if __name__ == "__main__":
    main()
