"""`velollm cache stats|clear`: the response cache under $VELOLLM_CACHE (and a shared Redis with --cache-url)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("cache", help="show or clear the response cache")
    p.add_argument("action", choices=["stats", "clear"])
    p.add_argument("--cache-url", default=None, help="redis://host:port: the shared exact tier too")
    p.add_argument("--json", action="store_true", help="stats as one JSON object")
    p.set_defaults(run=run)


async def _redis(url: str, action: str) -> int:
    from velollm.cache.redis_store import RedisStore

    store = RedisStore(url, max_entries=1)
    try:
        return await (store.clear() if action == "clear" else store.count())
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    from velollm.cache.options import cache_directory
    from velollm.cache.sqlite_store import SQLiteStore

    directory = cache_directory(os.environ)
    store = SQLiteStore(directory / "cache.sqlite3", max_entries=1 << 62)
    try:
        if args.action == "clear":
            removed = store.clear_sync()
            print(f"removed {removed} entries from {store.path}")
            if args.cache_url:
                print(f"removed {asyncio.run(_redis(args.cache_url, 'clear'))} entries from {args.cache_url}")
            return 0
        stats: dict[str, Any] = {"path": str(store.path), **store.stats_sync()}
        if store.set_aside is not None:
            stats["set_aside"] = str(store.set_aside)
        if args.cache_url:
            stats["redis_entries"] = asyncio.run(_redis(args.cache_url, "stats"))
    finally:
        store.close_sync()
    if args.json:
        print(json.dumps(stats))
    else:
        for name, value in stats.items():
            print(f"{name:17s} {value}")
    return 0
