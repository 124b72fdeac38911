"""Long conversations: TTFT per turn with and without turn prefetch, compression per step, model switch.

    python benchmarks/context.py [--turns 30] [--max-model-len 8192] [--repeats 1] [--parts ttft,floor,compress,switch]
    python benchmarks/context.py --device cuda        # the same on a GPU (issue 17: "and on a GPU when one is available")
    python benchmarks/context.py --parts lingua --compressor bert-base-random [--fit-turns 13,20,27]
    python benchmarks/context.py --shape llama-3.2-1b --layers 2 [--parts ttft,floor]   # a real model's width

A 30-turn chat on the demo model through `velollm serve --context-overflow compress`: each turn a new
~300-token user message and a 32-token answer; turns 5, 10, 15, 20 and 25 also carry a tool call whose
result is the same ~2k-token output. TTFT (first streamed content) per turn, once with turn prefetch and
once with `--no-prefetch` (prompts tokenized afresh), and the prefix-cache hits; with `--repeats R`, R
conversations (other words) on the same server and the median per turn. Floor: the engine alone (offline
`LLM`, no HTTP, no fitting) on prompts of turn 2's and the last turn's sizes with the same cached prefix: the
part of the growth that is the model's own attention over the longer history. Compression: the lossless
steps on the final history (tokens before/after, time), and what the server reported for its last turn.
Switch: two models with `--max-loaded-models 1`, TTFT of the first request after each switch: the model
woken from host memory, loaded cold, or loaded ahead after an /api/show (model prefetch).
Fit: the host side of the turns that change the prompt (13: first compression; 27: truncation before the
summary), without a server or model: the same conversation (answers: 40 fixed words) fitted afresh in
process as the server's `compress` does (the fit, then the summary's second fit with a quarter of the budget
more room), median of --fit-repeats, with the chat-template renders and the tokens tokenized.
Lingua (with --compressor): the token-classifier step of `--context-compressor` on that conversation
fitted afresh at --fit-turns in order: tokens before and after it, its time, the messages it compressed,
then the last turn once more (its compressed messages from the cache).
Shape (--shape, for the ttft and floor parts only; the others run on the demo model): the same run on a real
model's shape (benchmarks/shapes.py) with random weights, written once under --workdir as a Hugging Face
folder, its tokenizer the demo's with the vocabulary filled (the same conversation tokenizes to the same
ids; every id the model samples decodes), float32 on the CPU and bfloat16 on CUDA. The demo is 64 wide, so
at turn 30 its attention over the cached history dwarfs the rest of the model; at a real width the new
tokens' projections and MLP weigh more. --layers N keeps N of the shape's layers: each layer's attention
over the history and its projections and MLP over the new tokens are the same in every layer, so their
ratio does not depend on the number of layers (what does not scale with layers, the HTTP, the fitting, the
embedding and the lm_head, weighs more with fewer).
The load average of the machine is printed with each part (other jobs share it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from server_metrics import metric  # noqa: E402 (after the path insert)
from shapes import SHAPES  # noqa: E402 (after the path insert)

from tests.serve_process import start_serve, stop_serve  # noqa: E402 (after the path insert)

SHAPE_PARTS = ("ttft", "floor")  # the parts --shape runs; the others use the demo model
DEFAULT_PARTS = "ttft,floor,compress,switch"
DEMO_KV_CACHE = 512 << 20

WORDS = ("river mill grain morning numbers sacks brother stories bakery bread coins model token engine cache "
         "scheduler weather clouds north sunshine south winds temperature thunder evening umbrella coat book "
         "office letter system prompt user question assistant answer tool function name arguments location "
         "result conversation recipe onions carrots celery olive water stock salt pepper thyme harbour dawn "
         "coast lighthouse keeper logbook storms ships whales visitor stars night").split()


def on_cuda(args: argparse.Namespace) -> bool:
    return args.device.startswith("cuda") or (args.device == "auto" and _cuda())


def shape_dtype(args: argparse.Namespace) -> str:
    """The --shape folder's dtype: bfloat16 on CUDA, float32 on the CPU (the CPU path runs a float32 checkpoint
    as stored, as benchmarks/serving_velollm.py's CPU runs do)."""
    return "bfloat16" if on_cuda(args) else "float32"


def shape_layers(args: argparse.Namespace) -> int:
    return args.layers or SHAPES[args.shape]["num_hidden_layers"]


def model_folder(args: argparse.Namespace, dtype: str) -> Path:
    """--shape's folder under --workdir: `{shape}-{dtype}` with all its layers (the folder the other benchmarks
    write), `{shape}-{dtype}-{N}layers` with --layers N."""
    name = f"{args.shape}-{dtype}"
    if shape_layers(args) != SHAPES[args.shape]["num_hidden_layers"]:
        name += f"-{shape_layers(args)}layers"
    return args.workdir / name


def kv_cache_memory(args: argparse.Namespace) -> int:
    """The demo's 512 MiB, or for --shape room for four contexts of its KV (the prefix cache holds the previous
    turn while the next one runs, and the summary's request), in the folder's dtype, at least 512 MiB."""
    if not args.shape:
        return DEMO_KV_CACHE
    shape = SHAPES[args.shape]
    head_dim = shape.get("head_dim") or shape["hidden_size"] // shape["num_attention_heads"]
    per_token = shape_layers(args) * 2 * shape["num_key_value_heads"] * head_dim * (2 if on_cuda(args) else 4)
    return max(DEMO_KV_CACHE, 4 * args.max_model_len * per_token)


def served_model(args: argparse.Namespace) -> str:
    """The model name the conversation's requests send."""
    return args.shape or "demo"


def serve_args(args: argparse.Namespace) -> list[str]:
    """`velollm serve`'s model, KV cache and device arguments (the parts add theirs): the demo by default, the
    --shape folder (args.folder, written by main) served as the shape's name."""
    model = ["--model", str(args.folder), "--served-model-name", args.shape] if args.shape else []
    return [*model, "--kv-cache-memory", f"{kv_cache_memory(args) >> 20}MiB", "--device", args.device]


def model_label(args: argparse.Namespace) -> str:
    if not args.shape:
        return "demo"
    return (f"{args.shape} shape, random weights, {shape_layers(args)} of its "
            f"{SHAPES[args.shape]['num_hidden_layers']} layers, {shape_dtype(args)}")


def model_fields(args: argparse.Namespace) -> dict:
    """The JSON rows' model: demo, or the shape with its layers and dtype."""
    if not args.shape:
        return {"model": "demo"}
    return {"model": args.shape, "layers": shape_layers(args), "dtype": shape_dtype(args)}


def start(args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen, str, Path]:
    """`velollm serve` with the demo model from the usual cache, or the --shape folder (tests/serve_process
    does the waiting)."""
    from velollm.engine.loader.demo import default_cache_dir

    cache = os.environ.get("VELOLLM_CACHE") or str(default_cache_dir())
    proc, url, log, _ = start_serve(Path(tempfile.mkdtemp()), *serve_args(args), *extra,
                                    env={"VELOLLM_CACHE": cache}, timeout=300)
    return proc, url, log


def user_message(rng: random.Random, turn: int, num_words: int) -> str:
    return f"Turn {turn}. " + " ".join(rng.choice(WORDS) for _ in range(num_words)) + "?"


def tool_output(num_rows: int) -> str:
    rows = [{"id": i, "name": f"sack {i}", "mill": "river", "weight_kg": 40 + i % 7, "day": WORDS[i % len(WORDS)]}
            for i in range(num_rows)]
    return json.dumps({"rows": rows}, indent=2)


def server_ttft(url: str, before: tuple[float, float]) -> tuple[float, float, float]:
    """(sum, count) of the server's TTFT histogram (arrival to first token), and the last request's seconds:
    the histogram is observed as the request closes, so it is polled until the count moves."""
    deadline = time.perf_counter() + 2
    while True:
        now = (metric(url, "velollm_time_to_first_token_seconds_sum"),
               metric(url, "velollm_time_to_first_token_seconds_count"))
        if now[1] > before[1] or time.perf_counter() > deadline:
            return now[0], now[1], now[0] - before[0]
        time.sleep(0.01)


def fit_ms(header: str) -> str:
    """The fitting's seconds in x-velollm-context (every step, or `reuse`), in ms."""
    part = dict(p.split("=", 1) for p in header.split("; ") if "=" in p).get("seconds")
    return f"{sum(float(x.split(':')[1]) for x in part.split(',')) * 1e3:.1f}" if part else "-"


def turn_request(client: httpx.Client, model: str, messages: list[dict], max_tokens: int) -> dict:
    """One streamed turn: TTFT (first content), the answer, usage and the x-velollm-context header."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, text, usage = None, "", {}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        header = r.headers.get("x-velollm-context", "")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    ttft = ttft or time.perf_counter() - t0
                    text += choice["delta"]["content"]
    return {"ttft": ttft or time.perf_counter() - t0, "text": text, "usage": usage, "context": header}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


SYSTEM = {"role": "system", "content": "You are a helpful assistant for a river mill."}


def user_turn(messages: list[dict], rng: random.Random, turn: int, args: argparse.Namespace, output: str) -> None:
    """Appends the turn's user message; every fifth turn but the last, also a tool call and its rows."""
    messages.append({"role": "user", "content": user_message(rng, turn, args.words)})
    if turn % 5 == 0 and turn < args.turns:
        call = {"id": f"call_{turn}", "type": "function", "function": {"name": "mill_rows", "arguments": "{}"}}
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"call_{turn}", "content": output}]


def conversation(args: argparse.Namespace, url: str, seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    output = tool_output(args.tool_rows)
    messages: list[dict] = [dict(SYSTEM)]
    rows = []
    server = server_ttft(url, (0.0, -1.0))[:2]
    with httpx.Client(base_url=url, timeout=600) as client:
        for turn in range(1, args.turns + 1):
            user_turn(messages, rng, turn, args, output)
            hits = metric(url, "velollm_prefix_cache_hits_total")
            out = turn_request(client, served_model(args), messages, args.max_tokens)
            out["hits"] = metric(url, "velollm_prefix_cache_hits_total") - hits
            *server, seconds = server_ttft(url, server)
            messages.append({"role": "assistant", "content": out["text"]})
            rows.append({"turn": turn, "ttft_ms": round(out["ttft"] * 1e3, 1), "server_ms": round(seconds * 1e3, 1),
                         "fit_ms": fit_ms(out["context"]),
                         "prompt_tokens": out["usage"].get("prompt_tokens"), "cache_hit_tokens": int(out["hits"]),
                         "context": out["context"]})
    return messages, rows


def median_rows(repeats: list[list[dict]]) -> list[dict]:
    """Per turn: the median TTFT over the repeats; the other columns from the first conversation."""
    return [{**rows[0], **{k: round(statistics.median(r[k] for r in rows), 1) for k in ("ttft_ms", "server_ms")}}
            for rows in zip(*repeats)]


def part_ttft(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    runs = {}
    print(f"\n{load()} before the TTFT part")
    for label, extra in (("prefetch", ()), ("no-prefetch", ("--no-prefetch",))):
        proc, url, _ = start(args, "--max-model-len", str(args.max_model_len), "--context-overflow", "compress",
                             *extra)
        try:
            repeats = []
            for r in range(args.repeats):
                history, rows = conversation(args, url, seed=7 + r)
                messages = history if r == 0 else messages  # noqa: F821 (set by the first conversation)
                repeats.append(rows)
        finally:
            stop_serve(proc)
        runs[label] = median_rows(repeats)
        print(f"{load()} after the {label} server")
    print(f"\n## TTFT per turn ({model_label(args)}, --context-overflow compress, --max-model-len {args.max_model_len}, "
          f"median of {args.repeats} conversation(s) per server)")
    print("Server ms: arrival to first token on the server (velollm_time_to_first_token_seconds); fit ms: the "
          "fitting's own seconds (x-velollm-context), both inside the client's TTFT; first conversation's header.")
    print("| turn | prompt tokens | TTFT prefetch ms | server ms | fit ms | cache hits | TTFT no-prefetch ms | "
          "server ms | cache hits | context |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for a, b in zip(runs["prefetch"], runs["no-prefetch"]):
        print(f"| {a['turn']} | {a['prompt_tokens']} | {a['ttft_ms']} | {a['server_ms']} | {a['fit_ms']} | "
              f"{a['cache_hit_tokens']} | {b['ttft_ms']} | {b['server_ms']} | {b['cache_hit_tokens']} | "
              f"{a['context'] or '-'} |")
    for label, rows in runs.items():
        ratio = rows[-1]["ttft_ms"] / rows[1]["ttft_ms"]
        print(f"{label}: turn {rows[-1]['turn']} TTFT / turn 2 TTFT = {ratio:.2f} (target <= 1.5)")
        print(json.dumps({"what": "context_ttft", **model_fields(args), "device": args.device, "mode": label, "turns": rows[-1]["turn"],
                          "turn2_ms": rows[1]["ttft_ms"], "last_ms": rows[-1]["ttft_ms"],
                          "last_prompt_tokens": rows[-1]["prompt_tokens"], "ratio": round(ratio, 2),
                          "target": 1.5, "met": ratio <= 1.5}), flush=True)
    return messages, runs["prefetch"]


def part_floor(args: argparse.Namespace, rows: list[dict]) -> None:
    """The engine alone on prompts of turn 2's and the last turn's sizes: the cached prefix first (as the
    prefix cache holds it in the server), then the whole prompt timed to its first token."""
    from velollm import LLM, SamplingParams

    llm = LLM(str(args.folder) if args.shape else "demo", device=args.device, max_model_len=args.max_model_len,
              kv_cache_memory=kv_cache_memory(args))
    params = SamplingParams(temperature=0, max_tokens=1)
    rng = random.Random(0)
    out = {}
    try:
        for row in (rows[1], rows[-1]):
            cached, total = row["cache_hit_tokens"], row["prompt_tokens"]
            times = []
            for _ in range(args.floor_repeats):
                ids = [rng.randrange(16, 900) for _ in range(total)]
                llm.generate([ids[:cached]], params)
                t0 = time.perf_counter()
                llm.generate([ids], params)
                times.append(time.perf_counter() - t0)
            out[row["turn"]] = (cached, total, statistics.median(times) * 1e3)
    finally:
        llm.close()
    print(f"\n## Floor: the engine alone (offline LLM, {model_label(args)}), median of {args.floor_repeats}; "
          f"{load()}")
    print("| turn | cached tokens | new tokens | TTFT ms |")
    print("|---|---|---|---|")
    for turn, (cached, total, ms) in out.items():
        print(f"| {turn} | {cached} | {total - cached} | {ms:.1f} |")
    (_, _, first), (_, _, last) = out.values()
    print(f"engine alone: turn {rows[-1]['turn']} / turn 2 = {last / first:.2f}")
    print(json.dumps({"what": "context_floor", **model_fields(args), "device": args.device, "turn2_ms": round(first, 1),
                      "last_ms": round(last, 1), "ratio": round(last / first, 2)}), flush=True)


def part_compress(messages: list[dict]) -> None:
    from velollm.context.compressor import STEPS
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(ensure_demo())

    def count(ms: list[dict]) -> int:
        return len(tokenizer.encode(tokenizer.apply_chat_template(ms), add_special_tokens=False))

    print(f"\n## Compression of the final history ({len(messages)} messages), lossless steps")
    print("| step | tokens before | tokens after | saved | ms |")
    print("|---|---|---|---|---|")
    current = messages
    rows = []
    for name, step in STEPS:
        before = count(current)
        t0 = time.perf_counter()
        current = step(current)
        dt = time.perf_counter() - t0
        after = count(current)
        print(f"| {name} | {before} | {after} | {before - after} | {dt * 1e3:.2f} |")
        rows.append({"step": name, "before": before, "after": after, "ms": round(dt * 1e3, 2)})
    print(json.dumps({"what": "context_compress", "steps": rows}), flush=True)


def sent_messages(args: argparse.Namespace, seed: int = 7) -> dict[int, list[dict]]:
    """The TTFT part's conversation without a server: per turn, the messages that turn sends."""
    rng = random.Random(seed)
    output = tool_output(args.tool_rows)
    messages: list[dict] = [dict(SYSTEM)]
    sent = {}
    for turn in range(1, args.turns + 1):
        user_turn(messages, rng, turn, args, output)
        sent[turn] = list(messages)
        messages.append({"role": "assistant", "content": " ".join(WORDS[(turn + i) % len(WORDS)] for i in range(40))})
    return sent


def part_fit(args: argparse.Namespace) -> None:
    from velollm.context.compressor import Compressor
    from velollm.context.fitter import ContextFitter, output_reserve
    from velollm.context.turn_cache import TurnCache
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(ensure_demo())
    sent = sent_messages(args)
    reserve = output_reserve(args.max_model_len, args.max_tokens)
    budget = args.max_model_len - reserve
    roomy = reserve + budget // 4 + max(16, min(256, budget // 8))  # velollm.api.context_fit._summarize
    print(f"\n## Fitting afresh, host side only (demo tokenizer and template, --max-model-len {args.max_model_len}, "
          f"median of {args.fit_repeats}); {load()}")
    print("| turn | messages | tokens | fitted tokens | dropped messages | fit ms | summary's refit ms | renders | tokens tokenized |")
    print("|---|---|---|---|---|---|---|---|---|")
    for turn in (int(t) for t in args.fit_turns.split(",")):
        messages = sent[turn]
        times, stats = [], {}
        for _ in range(args.fit_repeats):
            renders, tokenized = [0], [0]

            def render(ms: list[dict]) -> str:
                renders[0] += 1
                return tokenizer.apply_chat_template(ms)

            counted = CountingTokenizer(tokenizer, tokenized)
            fitter = ContextFitter(render, counted, TurnCache())
            t0 = time.perf_counter()
            fitted = fitter.fit(messages, "compress", args.max_model_len, reserve, Compressor())
            t1 = time.perf_counter()
            fitter.fit(messages, "compress", args.max_model_len, roomy, Compressor())
            times.append((t1 - t0, time.perf_counter() - t1))
            stats = {"renders": renders[0], "tokenized": tokenized[0], "report": fitted.report}
        fit_s = statistics.median(t[0] for t in times)
        refit_s = statistics.median(t[1] for t in times)
        report = stats["report"]
        print(f"| {turn} | {len(messages)} | {report.num_original_tokens} | {report.num_prompt_tokens} | "
              f"{len(report.dropped_messages)} | {fit_s * 1e3:.1f} | {refit_s * 1e3:.1f} | {stats['renders']} | "
              f"{stats['tokenized']} |")
        print(json.dumps({"what": "context_fit", "turn": turn, "fit_ms": round(fit_s * 1e3, 1),
                          "refit_ms": round(refit_s * 1e3, 1), "renders": stats["renders"],
                          "tokens_tokenized": stats["tokenized"]}), flush=True)


def lingua_compressor(spec: str, device: str):
    """--compressor: a folder (or a repo id in the HF cache), or `bert-base-random`: BERT-base's shape
    (llmlingua-2-bert-base-multilingual-cased-meetingbank's but for the vocabulary) with random weights and
    all-MiniLM-L6-v2's tokenizer: its timing is a real model's, its choice of words is not."""
    from velollm.context.lingua import LinguaCompressor
    from velollm.context.lingua_folder import resolve_compressor_folder

    if spec != "bert-base-random":
        return LinguaCompressor.from_folder(resolve_compressor_folder(spec).path, device)
    import torch

    from velollm.embed.config import EncoderConfig
    from velollm.embed.resolve import default_model_folder
    from velollm.embed.token_classifier import TokenClassifier
    from velollm.engine.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(default_model_folder(), generation_config={}).backend
    tokenizer.no_truncation()
    tokenizer.no_padding()
    torch.manual_seed(0)
    config = EncoderConfig("bert", vocab_size=30522 + 100, hidden_size=768, num_hidden_layers=12,
                           num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    return LinguaCompressor(TokenClassifier(config, 2).to(device).eval(), tokenizer, "bert")


def part_lingua(args: argparse.Namespace) -> None:
    """The token-classifier step (--context-compressor) on the conversation fitted afresh at each of
    --fit-turns, in order, as the server's `compress` does (before the summary), then the last turn once
    more: its compressed messages come from the cache."""
    from velollm.context.compressor import Compressor
    from velollm.context.fitter import ContextFitter, output_reserve
    from velollm.context.lingua_step import LinguaStep, token_counter
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and _cuda()) else "cpu"
    t0 = time.perf_counter()
    compressor = lingua_compressor(args.compressor, device)
    load_s = time.perf_counter() - t0
    tokenizer = Tokenizer.from_folder(ensure_demo())
    step = LinguaStep(lambda: compressor)
    sent = sent_messages(args)
    reserve = output_reserve(args.max_model_len, args.max_tokens)
    config = compressor.classifier.encoder.config
    print(f"\n## Token classifier step ({args.compressor}: {config.model_type}, {config.num_hidden_layers} layers, "
          f"hidden {config.hidden_size}, on {device}, loaded in {load_s:.2f} s; demo tokenizer and template, "
          f"--max-model-len {args.max_model_len}); {load()}")
    print("| turn | tokens | after lossless | after lingua | lingua saved | lingua ms | messages compressed | "
          "dropped messages | final tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    turns = [int(t) for t in args.fit_turns.split(",")]
    for turn in [*turns, turns[-1]]:
        messages = sent[turn]
        fitter = ContextFitter(tokenizer.apply_chat_template, tokenizer)
        lossless = fitter.count(Compressor().apply(messages))
        before_cache = len(step._cache)
        fitted = fitter.fit(messages, "compress", args.max_model_len, reserve,
                            Compressor(lingua=step, count_text=token_counter(tokenizer)))
        report = fitted.report
        if report is None:
            print(f"| {turn} | {fitter.count(messages)} | fits | | | | | | |")
            continue
        saved = report.saved_tokens.get("lingua", 0)
        ms = report.step_seconds.get("lingua", 0.0) * 1e3
        print(f"| {turn} | {report.num_original_tokens} | {lossless} | {lossless - saved} | {saved} | {ms:.1f} | "
              f"{len(step._cache) - before_cache} | {len(report.dropped_messages)} | {report.num_prompt_tokens} |")
        print(json.dumps({"what": "context_lingua", "turn": turn, "tokens": report.num_original_tokens,
                          "after_lossless": lossless, "lingua_saved": saved, "lingua_ms": round(ms, 1),
                          "final_tokens": report.num_prompt_tokens, "device": device}), flush=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class CountingTokenizer:
    """The tokenizer, counting the tokens it produces (encode and its backend's encode_batch)."""

    def __init__(self, tokenizer, tokenized: list[int]) -> None:
        self._tokenizer = tokenizer
        self._tokenized = tokenized
        self.backend = self  # the fitter's SegmentEncoder batches through `backend`

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def get_added_tokens_decoder(self):
        return self._tokenizer.backend.get_added_tokens_decoder()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        self._tokenized[0] += len(ids)
        return ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True):
        out = self._tokenizer.backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        self._tokenized[0] += sum(len(e.ids) for e in out)
        return out


def wait_loaded(client: httpx.Client, model: str, loaded: bool = True, timeout: float = 300.0) -> None:
    """Until /api/ps lists `model` (or, `loaded=False`, no longer lists it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (model in [m["name"] for m in client.get("/api/ps").json()["models"]]) == loaded:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{model} still {'not ' if loaded else ''}loaded after {timeout} s")


def part_switch(args: argparse.Namespace) -> None:
    from velollm.engine.loader.demo import ensure_demo

    demo = Path(ensure_demo())
    other = Path(tempfile.mkdtemp()) / "demo-copy"
    shutil.copytree(demo, other)
    models = {"A": str(demo), "B": str(other)}
    print("\n## Model switch with --max-loaded-models 1 (two on-demand copies of demo)")
    print("prefetch: the previous model is unloaded (keep_alive 0), /api/show names the next one (a user picks it),")
    print("the client waits until /api/ps lists it (the time a user takes to type), then sends; TTFT is the send's")
    print("| --host-cache-memory | request | model | TTFT ms | load |")
    print("|---|---|---|---|---|")
    summary: list[str] = []
    kinds = ("cold", "host", "prefetch")
    try:
        for host_cache, show in (("1GiB", False), ("0", False), ("0", True)):
            mode = host_cache + (" + show (prefetch)" if show else "")
            proc, url, _ = start(args, "--max-loaded-models", "1", "--max-model-len", "2048",
                                 "--host-cache-memory", host_cache)
            try:
                by_kind: dict[str, list[float]] = {}
                with httpx.Client(base_url=url, timeout=600) as client:
                    for i, label in enumerate("AB" * args.switches):
                        before = {k: metric(url, "velollm_model_loads_total", kind=k) for k in kinds}
                        if show:
                            client.post("/api/show", json={"model": models[label]}).raise_for_status()
                            wait_loaded(client, models[label])
                        out = turn_request(client, models[label], [{"role": "user", "content": "Hello there"}], 4)
                        how = [k for k in before if metric(url, "velollm_model_loads_total", kind=k) > before[k]]
                        print(f"| {mode} | {i + 1} | {label} | {out['ttft'] * 1e3:.1f} | {how[0] if how else '-'} |")
                        if i >= 2 and how:  # after both models were seen once
                            by_kind.setdefault(how[0], []).append(out["ttft"] * 1e3)
                        if show:  # free the slot: a prefetch never evicts a loaded model
                            client.post("/api/generate", json={"model": models[label], "keep_alive": 0})
                            wait_loaded(client, models[label], loaded=False)
                for kind, values in by_kind.items():
                    summary.append(f"--host-cache-memory {mode}: switch TTFT median {statistics.median(values):.1f} "
                                   f"ms over {len(values)} {kind} loads")
                    summary.append(json.dumps({"what": "context_switch", "device": args.device,
                                               "host_cache": host_cache, "show": show, "load": kind,
                                               "loads": len(values), "ttft_median_ms": round(statistics.median(values), 1)}))
            finally:
                stop_serve(proc)
    finally:
        shutil.rmtree(other.parent, ignore_errors=True)
    print("\n".join(summary))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=30)
    p.add_argument("--words", type=int, default=150, help="words per user message (~2 demo tokens each)")
    p.add_argument("--tool-rows", type=int, default=40, help="rows of the repeated tool output (~50 tokens each)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--switches", type=int, default=5, help="A,B request pairs in the switch part")
    p.add_argument("--repeats", type=int, default=1, help="conversations per server in the TTFT part")
    p.add_argument("--floor-repeats", type=int, default=5)
    p.add_argument("--fit-turns", default="13,27", help="turns of the fit part")
    p.add_argument("--fit-repeats", type=int, default=5)
    p.add_argument("--parts", default=None,
                   help=f"comma-separated: ttft, floor, compress, switch, fit, lingua (default: {DEFAULT_PARTS}; "
                        f"with --shape: {','.join(SHAPE_PARTS)}, the only parts it runs)")
    p.add_argument("--device", default="auto", help="the servers' and the floor engine's device: auto, cpu, cuda")
    p.add_argument("--compressor", default=None,
                   help="the lingua part's token classifier: a folder, an LLMLingua-2 repo id in the HF cache, or "
                        "bert-base-random (BERT-base's shape, random weights: timing only)")
    p.add_argument("--shape", default=None, choices=sorted(SHAPES),
                   help="the ttft and floor parts on this real model shape (benchmarks/shapes.py), random weights, "
                        "instead of the demo (the other parts run on the demo only: refused with --shape)")
    p.add_argument("--layers", type=int, default=None,
                   help="with --shape: keep only this many of its layers (the per-layer ratio of attention over "
                        "the history to projections and MLP does not depend on the number of layers)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench",
                   help="where --shape's model folder is written once and reused (as the other benchmarks do)")
    args = p.parse_args(argv)
    if args.layers is not None and not args.shape:
        p.error("--layers needs --shape (the demo model keeps its layers)")
    if args.shape:
        total = SHAPES[args.shape]["num_hidden_layers"]
        if args.layers is not None and not 1 <= args.layers <= total:
            p.error(f"--layers {args.layers}: {args.shape} has {total} layers (give 1 to {total})")
        others = sorted(set((args.parts or "").split(",")) - set(SHAPE_PARTS) - {""})
        if others or args.compressor:
            p.error(f"--shape runs the {' and '.join(SHAPE_PARTS)} parts only; the "
                    f"{', '.join(others) or 'lingua'} part(s) use the demo model: run them without --shape")
    args.parts = args.parts or (",".join(SHAPE_PARTS) if args.shape else DEFAULT_PARTS)
    args.folder = model_folder(args, shape_dtype(args)) if args.shape else None
    return args


def main() -> int:
    args = parse_args()
    # A time limit's SIGTERM (gpu_check.sh) ends the script through its finally blocks: its servers go down too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device != "cpu" and torch.cuda.is_available() else ""
    print(f"# benchmarks/context.py --device {args.device}{gpu}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); {load()}")
    if args.shape:
        import shapes

        t0 = time.perf_counter()
        shapes.save_random_model(args.shape, args.folder, getattr(torch, shape_dtype(args)), shape_layers(args))
        print(f"# model: {model_label(args)} ({args.folder}, ready in {time.perf_counter() - t0:.1f} s). "
              f"Layers: each layer does the same work, its attention over the cached history and its projections "
              f"and MLP over the new tokens, so their ratio, and a turn's growth with the history, does not depend "
              f"on the number of layers; the HTTP, the fitting, the embedding and the lm_head do not scale with "
              f"layers and weigh more with fewer")
    parts = set(args.parts.split(","))
    messages, rows = part_ttft(args) if "ttft" in parts else ([], [])
    if "floor" in parts and rows:
        part_floor(args, rows)
    if "compress" in parts and messages:
        part_compress(messages)
    if "fit" in parts:
        part_fit(args)
    if "switch" in parts:
        part_switch(args)
    if "lingua" in parts or args.compressor:
        part_lingua(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
