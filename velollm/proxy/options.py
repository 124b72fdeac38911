"""`velollm serve` options for the upstream, turned into an UpstreamConfig at the CLI edge."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from velollm.config import parse_size
from velollm.proxy.upstream import UpstreamConfig
from velollm.wire.ollama_host import parse_ollama_host


def add_upstream_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("upstream (Ollama or OpenAI-compatible server for models VeloLLM cannot run)")
    group.add_argument("--upstream", default=None,
                       help="upstream URL (default: $OLLAMA_HOST in Ollama's format, else http://127.0.0.1:11434)")
    group.add_argument("--upstream-kind", choices=["auto", "ollama", "openai"], default="auto",
                       help="auto: GET /api/version answers -> ollama (a VeloLLM, which says so there: either API "
                            "passed through unconverted), else openai; ollama: converted as for an Ollama")
    group.add_argument("--upstream-api-key", default=None, help="bearer token sent to the upstream")
    group.add_argument("--upstream-connect-timeout", type=float, default=2.0, metavar="S")
    group.add_argument("--upstream-first-byte-timeout", type=float, default=600.0, metavar="S",
                       help="wait for the upstream's first byte (it may be loading a model)")
    group.add_argument("--upstream-idle-timeout", type=float, default=120.0, metavar="S",
                       help="longest pause between two chunks of an upstream stream")
    group.add_argument("--max-upstream-body", type=parse_size, default=UpstreamConfig.max_body_bytes, metavar="SIZE",
                       help="most of one upstream answer held in memory (a whole answer converted or repaired, "
                            "one line of a stream); 502 beyond (default 64MiB; relayed answers are not held)")
    group.add_argument("--no-upstream", action="store_true", help="serve native models only")
    group.add_argument("--proxy-only", action="store_true",
                       help="no engine, no torch import: forward every request to the upstream")


def upstream_config(args: argparse.Namespace, environ: Mapping[str, str]) -> UpstreamConfig | None:
    """The upstream to use, or None with --no-upstream. `environ` is read here, once."""
    if getattr(args, "no_upstream", False):
        if args.proxy_only:
            raise ValueError("--proxy-only needs an upstream")
        return None
    asked = args.upstream or environ.get("OLLAMA_HOST")
    url = parse_ollama_host(asked)
    # OpenAI base URLs are often given with /v1; requests add it themselves.
    url = url.removesuffix("/v1")
    return UpstreamConfig(url=url, kind=args.upstream_kind, api_key=args.upstream_api_key,
                          connect_timeout=args.upstream_connect_timeout,
                          first_byte_timeout=args.upstream_first_byte_timeout,
                          idle_timeout=args.upstream_idle_timeout,
                          max_body_bytes=getattr(args, "max_upstream_body", UpstreamConfig.max_body_bytes),
                          configured=bool(asked))
