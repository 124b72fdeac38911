"""Routing by complexity: accuracy of the virtual model's policy on a labeled set of prompts.

    python benchmarks/complexity_routing.py [--data benchmarks/data/complexity_routing.json] [--k 5]

Four target models (labels): small (chat, simple facts), coder, reasoner (math, logic), writer
(long-form writing). Three policies, as a [routing] table each, on the same held-out prompts:
  rules       code -> coder, math -> reasoner, a writing-words pattern -> writer, else small
  knn         the labeled examples only (all-MiniLM-L6-v2), else small
  rules+knn   the rules first, the kNN when none matched, else small
Prints accuracy, per-label recall, and the time of one decision (p50, p99) on this machine: the
rules alone run on the event loop; the kNN embeds the query (one MiniLM forward on the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from velollm.complexity import ComplexityRouter, RoutingPolicy  # noqa: E402
from velollm.hw.detect import cpu_name  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "complexity_routing.json"
WRITING = r"\b(essay|story|novel|chapter|report|speech|white paper|guide|blog post|screenplay|letter|strategy)\b"
RULES = [
    {"name": "code", "model": "coder", "code": True},
    {"name": "math", "model": "reasoner", "math": True},
    {"name": "writing", "model": "writer", "pattern": WRITING},
]


def policies(examples: list[dict], k: int) -> dict[str, dict]:
    knn = {"k": k, "min_similarity": 0.2, "examples": examples}
    return {"rules": {"default": "small", "rules": RULES},
            "knn": {"default": "small", "knn": knn},
            "rules+knn": {"default": "small", "rules": RULES, "knn": knn}}


async def evaluate(name: str, table: dict, prompts: list[dict]) -> None:
    router = ComplexityRouter(RoutingPolicy.from_table(table))
    router.start()
    await router.decide({"messages": [{"role": "user", "content": "warm up"}]}, "/v1/chat/completions")
    hits, seen, times, routes = Counter(), Counter(), [], Counter()
    wrong = []
    for p in prompts:
        body = {"model": "auto", "messages": [{"role": "user", "content": p["text"]}]}
        t0 = time.perf_counter()
        decision = await router.decide(body, "/v1/chat/completions")
        times.append(time.perf_counter() - t0)
        seen[p["label"]] += 1
        routes[decision.route] += 1
        if decision.model == p["label"]:
            hits[p["label"]] += 1
        else:
            wrong.append((p["label"], decision.model, decision.route, p["text"][:60]))
    await router.close()
    times.sort()
    total = sum(hits.values())
    recall = "  ".join(f"{label} {hits[label]}/{seen[label]}" for label in sorted(seen))
    print(f"{name:10s} accuracy {total}/{len(prompts)} = {total / len(prompts):5.1%}   recall: {recall}")
    print(f"{'':10s} decision p50 {statistics.median(times) * 1e3:.2f} ms, p99 {times[int(0.99 * (len(times) - 1))] * 1e3:.2f} ms;"
          f" routes: {dict(routes)}")
    for label, model, route, text in wrong:
        print(f"{'':10s}   miss: {label:8s} -> {model:8s} ({route}) {text!r}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    data = json.loads(args.data.read_text())
    prompts = data["eval"]
    print(f"{len(prompts)} held-out prompts, {len(data['examples'])} kNN examples, labels "
          f"{sorted({p['label'] for p in prompts})}; {cpu_name()}, {os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, table in policies(data["examples"], args.k).items():
        await evaluate(name, table, prompts)


if __name__ == "__main__":
    asyncio.run(main())
