"""`velollm generate --model M "prompt"`: stream a completion to the terminal."""

from __future__ import annotations

import argparse
import os
import sys

from velollm.commands.engine_options import add_engine_arguments, engine_options
from velollm.config import QUANTIZATIONS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate a completion for one prompt")
    parser.add_argument("prompt")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS,
                        help="GGUF weights kept quantized (auto: on GPUs) or dequantized at load")
    add_engine_arguments(parser)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from velollm.config import EngineConfig
    from velollm.engine.llm_engine import LLMEngine
    from velollm.errors import VeloLLMError
    from velollm.sampling_params import SamplingParams

    try:
        config = EngineConfig(device=args.device, dtype=args.dtype, max_num_seqs=1, kv_cache_memory=256 << 20,
                              quantization=args.quantization, **engine_options(args, os.environ))
        engine = LLMEngine.from_model(args.model, config, cache_dir=os.environ.get("VELOLLM_CACHE"))
        tokenizer = engine.tokenizer
        if args.chat:
            prompt_ids = tokenizer.encode_chat([{"role": "user", "content": args.prompt}])
        else:
            prompt_ids = tokenizer.encode(args.prompt)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
        engine.add_request(prompt_ids, params)
    except (VeloLLMError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    while engine.has_unfinished_requests():
        for delta in engine.step():
            sys.stdout.write(delta.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    engine.close()
    return 0
