"""The cache's `velollm serve` flags and the ResponseCacheConfig they make ($VELOLLM_CACHE read here, at the edge)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from velollm.cache.config import (
    DEFAULT_FLIGHT_WAIT_S,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_SEMANTIC_MAX_ERROR,
    ResponseCacheConfig,
    parse_duration,
)


def cache_directory(env: Mapping[str, str]) -> Path:
    return Path(env.get("VELOLLM_CACHE") or os.path.expanduser("~/.cache/velollm"))


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("response cache (off by default)")
    g.add_argument("--cache", action="store_true",
                   help="answer repeated requests from the exact cache (SQLite under $VELOLLM_CACHE)")
    g.add_argument("--semantic-cache", action="store_true",
                   help="--cache, plus answers to rephrased questions (same context, verified)")
    g.add_argument("--cache-ttl", type=_duration, default="1h", help="entry lifetime, e.g. 90s, 15m, 1h (default 1h)")
    g.add_argument("--cache-max-entries", type=int, default=DEFAULT_MAX_ENTRIES,
                   help=f"entries kept, least recently used dropped first (default {DEFAULT_MAX_ENTRIES})")
    g.add_argument("--cache-url", default=None, help="redis://host:port: keep the exact tier in a shared Redis")
    g.add_argument("--embedding-model", default=None,
                   help="semantic cache embedder: a folder, GGUF, or name found offline (default all-MiniLM-L6-v2)")
    g.add_argument("--semantic-max-error", type=float, default=DEFAULT_SEMANTIC_MAX_ERROR,
                   help="highest estimated chance that a semantic hit answers another question "
                        f"(default {DEFAULT_SEMANTIC_MAX_ERROR}; sets the similarity threshold)")
    g.add_argument("--cache-flight-wait", type=_duration, default=f"{DEFAULT_FLIGHT_WAIT_S:g}s", metavar="S",
                   help="longest a request waits for an identical (or, semantic, rephrased) one being answered "
                        f"before generating its own, e.g. 30s (default {DEFAULT_FLIGHT_WAIT_S:g}s; 0: never waits)")


def cache_config(args: argparse.Namespace, env: Mapping[str, str]) -> ResponseCacheConfig | None:
    """None unless --cache, --semantic-cache or --cache-url was given. Raises ValueError on bad values."""
    if not (args.cache or args.semantic_cache or args.cache_url):
        return None
    return ResponseCacheConfig(directory=cache_directory(env), semantic=args.semantic_cache, ttl_s=args.cache_ttl,
                       max_entries=args.cache_max_entries, url=args.cache_url, embedding_model=args.embedding_model,
                       semantic_max_error=args.semantic_max_error,
                       embedding_device=getattr(args, "device", None) or "auto",
                       flight_wait_s=args.cache_flight_wait)
