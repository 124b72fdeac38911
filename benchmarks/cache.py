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
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache_pairs import Pair, load_pairs  # noqa: E402

from velollm.cache.config import ResponseCacheConfig  # noqa: E402
from velollm.cache.key import cache_key, tenant_of  # noqa: E402
from velollm.cache.response_cache import ResponseCache  # noqa: E402
from velollm.cache.vector_index import scan  # noqa: E402

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
        cache = ResponseCache.open(ResponseCacheConfig(Path(tmp), semantic=True))
        print(f"semantic threshold {cache.semantic.threshold:.3f} (--semantic-max-error "
              f"{cache.config.semantic_max_error}), embedder dim {cache.semantic.index.dim}, "
              f"{str(cache.semantic.embedder.dtype).removeprefix('torch.')}")
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


def _ms(samples: list[float]) -> str:
    p50, p99 = _percentiles(samples)
    return f"{p50:.2f} / {p99:.2f} ms"


async def _fill(cache: ResponseCache, n: int, firsts: list[str]) -> list:
    """n entries in one context (the worst case: every entry is a candidate): the questions of the labeled
    pairs embedded for real, the rest random unit vectors (embedding 100k real questions takes too long)."""
    rng = np.random.default_rng(0)
    tenant = tenant_of(None)
    keys = []
    for q in firsts:
        await cache.store(cache_key("/v1/chat/completions", _body([], q), tenant), ANSWER)
    for i in range(n - len(firsts)):
        key = cache_key("/v1/chat/completions", _body([], f"question {i} {rng.integers(1 << 30)}"), tenant)
        v = rng.standard_normal(cache.semantic.index.dim).astype(np.float32)
        await cache.store(key, ANSWER, vector=v / np.linalg.norm(v))
        keys.append(key)
    return keys


def _profile(cache: ResponseCache, context: str, questions: list[str]) -> str:
    """Each stage of a semantic lookup alone, on the tier's own thread, as the server runs it."""
    tier = cache.semantic
    embed, search, full, fetch, verify = [], [], [], [], []
    group = tier.index._groups[context]
    found = exact_found = 0
    for q in questions:
        t = time.perf_counter()
        vec = tier.executor.submit(tier.embed, q).result()
        embed.append(time.perf_counter() - t)
        t = time.perf_counter()
        candidates = tier.index.search(context, vec)
        search.append(time.perf_counter() - t)
        t = time.perf_counter()
        scores = scan(group.vectors[:len(group.keys)], vec)  # what a scan of every entry of the context costs
        best = group.keys[int(np.argmax(scores))]
        full.append(time.perf_counter() - t)
        exact_found += float(scores.max()) >= tier.threshold
        found += float(scores.max()) >= tier.threshold and bool(candidates) and candidates[0][1] == best
        if candidates:
            t = time.perf_counter()
            entry = tier.store.get_sync(candidates[0][1])
            fetch.append(time.perf_counter() - t)
            t = time.perf_counter()
            tier.verifier.check(q, entry.query or "")
            verify.append(time.perf_counter() - t)
    kind = "HNSW graph (usearch)" if group.graph is not None else "numpy scan"
    return (f"  stages p50 / p99: embedding {_ms(embed)} | index search ({kind}) {_ms(search)} | numpy scan of all "
            f"{_ms(full)} | SQLite read of a candidate {_ms(fetch)} | verifier {_ms(verify)}\n"
            f"  index recall: the best entry over the threshold found for {found}/{exact_found} questions")


def _timed_embedding(tier) -> list[float]:
    """Times the tier's embedding calls (the encoder with its tokenizer and pooling) into the list returned."""
    spans: list[float] = []
    embed = tier.embed

    def timed(text: str):
        t = time.perf_counter()
        try:
            return embed(text)
        finally:
            spans.append(time.perf_counter() - t)

    tier.embed = timed
    return spans


async def _latency(n: int, lookups: int) -> None:
    pairs = [p for p in load_pairs() if p.kind in ("paraphrase", "number", "entity", "direction", "negation",
                                                   "antonym")]
    firsts = sorted({p.first for p in pairs})
    seconds = [p.second for p in pairs]
    tenant = tenant_of(None)
    with tempfile.TemporaryDirectory() as tmp:
        config = ResponseCacheConfig(Path(tmp), semantic=True, max_entries=n + 10)
        cache = ResponseCache.open(config)
        embedder = cache.semantic.embedder
        t0 = time.perf_counter()
        keys = await _fill(cache, n, firsts)
        fill_s = time.perf_counter() - t0
        await cache.close()
        t0 = time.perf_counter()
        cache = ResponseCache.open(config, embedder=embedder)  # rebuilt from SQLite, the saved graph taken
        restart_s = time.perf_counter() - t0
        await cache.close()
        for saved in Path(tmp).glob("graph-*"):
            saved.unlink()
        t0 = time.perf_counter()
        cache = ResponseCache.open(config, embedder=embedder)  # as after a crash: no saved graph
        start_s = time.perf_counter() - t0
        cache.semantic.index.wait_for_graphs()  # built on a thread of its own: lookups scan until then
        graph_s = time.perf_counter() - t0 - start_s
        rng = np.random.default_rng(1)
        exact, hits, misses, rest = [], [], [], []
        embedded = _timed_embedding(cache.semantic)
        for i in range(lookups):
            key = keys[int(rng.integers(len(keys)))]
            t = time.perf_counter()
            assert (await cache.lookup(key)).kind == "exact"
            exact.append(time.perf_counter() - t)
            q = cache_key("/v1/chat/completions", _body([], seconds[i % len(seconds)]), tenant)
            embedded.clear()
            t = time.perf_counter()
            kind = (await cache.lookup(q)).kind
            (hits if kind == "semantic" else misses).append(time.perf_counter() - t)
            if kind == "semantic":
                rest.append(hits[-1] - sum(embedded))  # the same lookup less its own embedding: load-robust
        profile = _profile(cache, keys[0].context, [seconds[i % len(seconds)] for i in range(lookups)])
        await cache.close()
    print(f"{n:>7,} entries (filled in {fill_s:.1f} s; reopened in {restart_s:.1f} s with the graph saved at "
          f"shutdown; without it in {start_s:.1f} s, then the graph built in the background in {graph_s:.1f} s): "
          f"exact hit p50 / p99 {_ms(exact)} | semantic hit {_ms(hits)} ({len(hits)}) | semantic miss "
          f"{_ms(misses)} ({len(misses)}; embed + search + verify)\n  a semantic hit less its own embedding "
          f"(exact miss, thread hop, search, SQLite, verifier): {_ms(rest)}\n{profile}", flush=True)


def _embedding(lookups: int) -> None:
    """One short question, float32 vs bfloat16, 1 vs 2 intra-op threads (the tier uses one: see
    semantic_tier.py), each on a worker thread of its own as in the server, taking turns question by
    question so that the other jobs on the machine weigh on all alike."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from velollm.cache.response_cache import _embedding_dtype
    from velollm.embed import load_embedder

    questions = [p.second for p in load_pairs() if p.kind == "paraphrase"]
    runs = []
    for dtype in dict.fromkeys([_embedding_dtype("cpu") or torch.float32, torch.float32]):
        embedder = load_embedder(dtype=dtype)
        for threads in (1, 2):
            pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(threads,))
            runs.append((f"{str(dtype).removeprefix('torch.')} {threads} thread{'s' if threads > 1 else ''}",
                         embedder, pool, []))
    for i in range(lookups + 10):
        for _, embedder, pool, samples in runs:
            t = time.perf_counter()
            pool.submit(embedder.embed, [questions[i % len(questions)]]).result()
            samples.append(time.perf_counter() - t)
    for *_, pool, _ in runs:
        pool.shutdown()
    print("one question's embedding p50 / p99: " + " | ".join(
        f"{name} {_ms(samples[10:])} (fastest {min(samples) * 1000:.2f} ms)" for name, _, _, samples in runs),
        flush=True)


def _machine() -> str:
    import os
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (other jobs on the machine count here)")


def latency(args: argparse.Namespace) -> None:
    print(_machine())
    _embedding(args.lookups)
    for n in args.entries:
        asyncio.run(_latency(n, args.lookups))
    print(_machine())


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
