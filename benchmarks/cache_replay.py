"""The replayed workload of `benchmarks/cache.py replay`: a stream of chat requests where 40% repeat
(20% word for word, 20% rephrased) questions asked earlier, sent with fixed concurrency to `velollm
serve`, without a cache, with --cache and with --semantic-cache, in the same run; hit rate from the
x-velollm-cache headers, throughput as completed requests per second.

The model is a random Llama of 26M parameters with the demo model's tokenizer (`--model demo`
takes the 0.3M-parameter demo instead): its answers take real time per token, as any useful model's do
(the demo answers 128 tokens faster than a question embeds, so a cache could only cost there)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cache_pairs import load_pairs

REPO = Path(__file__).resolve().parents[1]


BENCH_MODEL = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 64}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="bench", help="bench (the random 26M-parameter Llama above) or any model "
                        "`velollm serve --model` takes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="each round runs every configuration once; ratios are per round (other jobs on the "
                             "machine slow rounds down together), the median is reported")


def workload(n: int, seed: int) -> list[str]:
    """60% new questions, 20% exact repeats, 20% paraphrases of questions already asked."""
    rng = random.Random(seed)
    pairs = [p for p in load_pairs() if p.kind == "paraphrase"]
    rng.shuffle(pairs)
    n_new = round(n * 0.6)
    firsts = pairs[:n_new]
    stream = [p.first for p in firsts]
    for i in range(n - n_new):
        at = rng.randrange(n_new // 4, len(stream) + 1)  # after the original has been asked
        asked = [p for p in firsts if p.first in stream[:at]]
        original = rng.choice(asked)
        stream.insert(at, original.first if i % 2 == 0 else original.second)
    return stream


def bench_model(folder: Path) -> Path:
    """The demo model's files with a larger random Llama (BENCH_MODEL sizes): special tokens keep logit 0,
    as in the demo, so that greedy decoding writes text and never stops early."""
    import torch
    from safetensors.torch import load_file, save_file

    from velollm.engine.loader.demo import ensure_demo

    demo = ensure_demo()
    config = {**json.loads((demo / "config.json").read_text()), **BENCH_MODEL}
    zero_rows = (load_file(str(demo / "model.safetensors"))["lm_head.weight"] == 0).all(dim=1)
    vocab, hidden, inter = config["vocab_size"], config["hidden_size"], config["intermediate_size"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    gen = torch.Generator().manual_seed(0)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.02

    tensors = {"model.embed_tokens.weight": normal(vocab, hidden), "model.norm.weight": torch.ones(hidden)}
    shapes = {"self_attn.q_proj": (q, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
              "self_attn.o_proj": (hidden, q), "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden),
              "mlp.down_proj": (hidden, inter)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden)
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
        for name, shape in shapes.items():
            tensors[f"{p}{name}.weight"] = normal(*shape)
    lm_head = normal(vocab, hidden)
    lm_head[zero_rows] = 0.0
    tensors["lm_head.weight"] = lm_head
    folder.mkdir(parents=True, exist_ok=True)
    for f in demo.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _start(tmp: Path, model: str, *flags: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VELOLLM_CACHE": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "velollm.cli", "serve", "--port", str(port), "--stats-interval",
                             "0", "--kv-cache-memory", "256MiB", "--model", model, "--served-model-name", "bench",
                             *flags], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("velollm serve did not start")


async def _run(url: str, stream: list[str], concurrency: int,
               max_tokens: int) -> tuple[float, dict[str, int], dict[str, list[float]]]:
    labels: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in stream:
        queue.put_nowait(q)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            q = queue.get_nowait()
            t = time.perf_counter()
            r = await client.post(f"{url}/v1/chat/completions", json={
                "model": "bench", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True})
            r.raise_for_status()
            label = r.headers.get("x-velollm-cache", "none")
            labels[label] = labels.get(label, 0) + 1
            latencies.setdefault(label, []).append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=300) as client:
        warm = {"model": "bench", "max_tokens": 2, "messages": [{"role": "user", "content": "warm-up"}]}
        await client.post(f"{url}/v1/chat/completions", json=warm)  # first-use compiles, embedder warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, labels, latencies


def replay(args: argparse.Namespace) -> None:
    stream = workload(args.requests, args.seed)
    repeats = len(stream) - len(set(stream))
    with tempfile.TemporaryDirectory() as models:
        model = args.model
        if model == "bench":
            model = str(bench_model(Path(models) / "bench"))
        print(f"{len(stream)} chat requests, {len(set(stream))} distinct texts ({repeats} word-for-word repeats), "
              f"40% repeat or rephrase an earlier question; concurrency {args.concurrency}, max_tokens "
              f"{args.max_tokens}, model {args.model}" + (f" {BENCH_MODEL}" if args.model == "bench" else ""))
        _replay(args, stream, model)


def _replay(args: argparse.Namespace, stream: list[str], model: str) -> None:
    configs = (("no cache", ()), ("--cache", ("--cache",)), ("--semantic-cache", ("--semantic-cache",)))
    rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    ratios: dict[str, list[float]] = {name: [] for name, _ in configs[1:]}
    for r in range(args.rounds):
        for name, flags in configs:
            with tempfile.TemporaryDirectory() as tmp:
                proc, url = _start(Path(tmp), model, *flags)
                try:
                    seconds, labels, latencies = asyncio.run(_run(url, stream, args.concurrency, args.max_tokens))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            hits = labels.get("hit-exact", 0) + labels.get("hit-semantic", 0)
            rates[name].append(len(stream) / seconds)
            print(f"round {r + 1} {name:17s} {len(stream) / seconds:6.2f} req/s ({seconds:6.1f} s)  hit rate "
                  f"{hits / len(stream):5.1%}  " + " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
                  + "  median latency " + ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms"
                                                    for k, v in sorted(latencies.items())), flush=True)
        for name in ratios:
            ratios[name].append(rates[name][-1] / rates["no cache"][-1])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other jobs on the machine count here)")
    print("throughput vs no cache, median of per-round ratios: "
          + ", ".join(f"{k} {statistics.median(v):.2f}x" for k, v in ratios.items()))
