"""`velollm serve`: the OpenAI- and Ollama-compatible HTTP server (uvicorn + velollm.api.app).

Environment variables are read here only: VELOLLM_API_KEY (when --api-key is absent), OLLAMA_HOST
(the default --upstream, in Ollama's format), OLLAMA_ORIGINS (extra CORS origins, comma-separated),
OLLAMA_KEEP_ALIVE (how long on-demand models stay loaded after their last request; default 5m),
VELOLLM_CACHE (where the demo model is generated and the response cache is kept; default ~/.cache/velollm),
OLLAMA_KV_CACHE_TYPE (when --kv-cache-dtype is absent: q8_0 -> fp8, f16 -> auto), OLLAMA_NOPRUNE (a true
boolean keeps the store's unused blobs at start, as Ollama's server does).

Models given with --model load at start-up and stay loaded. Any other name VeloLLM can run (Ollama
store, HF cache, a path) loads on first request, at most --max-loaded-models at once; names it
cannot run go to the upstream. --proxy-only starts without an engine (no torch import).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from velollm.api.server_config import DEFAULT_MODEL, ServerConfig
from velollm.cache.options import add_cache_arguments, cache_config
from velollm.commands.engine_options import add_engine_arguments, engine_options
from velollm.config import DEVICES, ENGINE_DTYPES, QUANTIZATIONS, EngineConfig, parse_size
from velollm.proxy.options import add_upstream_arguments, upstream_config
from velollm.proxy.upstream import UpstreamConfig

if TYPE_CHECKING:
    from velollm.router.config import RoutingFile

logger = logging.getLogger("velollm.serve")

def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="serve models over OpenAI- and Ollama-compatible HTTP APIs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None,
                   help=f"model to serve (repeatable): demo, a .gguf file, an HF folder, an Ollama name or an HF "
                        f"repo id in the local cache (default: {DEFAULT_MODEL})")
    p.add_argument("--served-model-name", action="append", default=None,
                   help="name clients use for the model (one per --model; default: the specifier)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help=f"one of {DEVICES} or cuda:N")
    p.add_argument("--dtype", default="auto", choices=ENGINE_DTYPES)
    p.add_argument("--quantization", default="auto", choices=QUANTIZATIONS,
                   help="GGUF weights: auto keeps them quantized on GPUs (Triton kernels compute in place) and, on CPUs "
                        "(bfloat16 or float32), repacks Q4_0/Q4_1/Q4_K to int4 and dequantizes the rest at load; "
                        "none always dequantizes; gguf always keeps them quantized")
    p.add_argument("--max-num-seqs", type=int, default=EngineConfig.max_num_seqs, help="most requests batched at once")
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--max-queue", type=int, default=EngineConfig.max_queue,
                   help="waiting requests before 503 (Ollama's default)")
    p.add_argument("--max-loaded-models", type=int, default=1,
                   help="models loaded on demand at once, besides the --model ones (default 1)")
    p.add_argument("--kv-cache-memory", type=parse_size, default=None,
                   help="KV cache size on CPU, e.g. 512MiB (default: the engine's)")
    p.add_argument("--gpu-memory-utilization", type=float, default=EngineConfig.gpu_memory_utilization,
                   help="share of GPU memory for weights, activations and the KV cache (default 0.9)")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs for decode steps (debugging)")
    add_engine_arguments(p)
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` (or $VELOLLM_API_KEY)")
    p.add_argument("--cors-origins", nargs="*", default=None,
                   help="origins allowed besides localhost ones ('*' for any; also $OLLAMA_ORIGINS)")
    p.add_argument("--max-request-bytes", type=parse_size, default=ServerConfig.max_request_bytes,
                   help="request body limit (413 beyond; default 32MiB)")
    p.add_argument("--shutdown-timeout", type=float, default=ServerConfig.shutdown_timeout_s,
                   help="on SIGTERM, seconds running requests get to finish before they are ended with an "
                        "error (new ones get 503 meanwhile; default 30)")
    p.add_argument("--header-timeout", type=float, default=ServerConfig.header_timeout_s, metavar="SECONDS",
                   help="time a connection gets to send a complete request line and headers, from its accept and "
                        "from the end of each response; past it the connection is closed without an answer "
                        "(slow or idle clients; also how long an idle keep-alive connection stays open; default 30)")
    p.add_argument("--body-timeout", type=float, default=ServerConfig.body_timeout_s, metavar="SECONDS",
                   help="longest a client may send nothing in the middle of a JSON request body: 408 (default 60)")
    p.add_argument("--stats-interval", type=float, default=10.0, help="seconds between stats log lines (0: off)")
    p.add_argument("--context-overflow", choices=("error", "truncate", "compress"), default=None,
                   help="a chat longer than the context: 400 (error), drop the oldest turns (truncate), or "
                        "compress then summarise them (compress); default: error on /v1, truncate on /api")
    p.add_argument("--context-compressor", default=None, metavar="PATH",
                   help="an LLMLingua-2 token classifier (a model folder, or a repo id already in the local "
                        "Hugging Face cache, e.g. microsoft/llmlingua-2-xlm-roberta-large-meetingbank; never "
                        "downloaded): --context-overflow compress then shortens the oldest long messages with it "
                        "before truncating or summarising")
    p.add_argument("--context-compressor-device", default="cpu", metavar="DEVICE",
                   help="where --context-compressor's classifier runs: cpu (default), cuda or cuda:N")
    p.add_argument("--host-cache-memory", type=parse_size, default=None,
                   help="weights of CPU models evicted by --max-loaded-models kept asleep in host memory for "
                        "a fast re-load, up to SIZE (default: a quarter of the RAM; 0: off)")
    p.add_argument("--quantize-threads", type=int, default=None, metavar="N",
                   help="threads a create's quantization (`ollama create -q`, without an Ollama upstream) runs on "
                        "inside this server (default: the CPUs it may use, at most 8; fewer leave CPUs to a CPU "
                        "engine serving meanwhile)")
    p.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                   help="tokenize every chat prompt afresh instead of reusing the previous turn's ids")
    p.add_argument("--no-turn-prefill", dest="turn_prefill", action="store_false",
                   help="do not prefill a chat's next-turn prefix in the background when an answer ends (the "
                        "engine runs it only while idle; it matters when the template rewrites the answer)")
    p.add_argument("--no-model-prefetch", dest="model_prefetch", action="store_false",
                   help="load on-demand models only when a request needs them, never ahead (after /api/show, "
                        "for the routes of the virtual model, or re-waking the last used one when a keep_alive runs out)")
    p.add_argument("--tool-retries", type=int, default=2,
                   help="regenerations with a corrective message when a tool call cannot be repaired (default 2)")
    p.add_argument("--responses-max", type=int, default=ServerConfig.responses_max,
                   help="stored /v1/responses kept, and as many stored chat completions (store: true; oldest "
                        "dropped first; also dropped after 30 days)")
    p.add_argument("--responses-max-row-size", type=parse_size, default=ServerConfig.responses_max_row_bytes,
                   metavar="SIZE",
                   help="largest stored response or stored chat completion, as stored (its JSON, base64 images "
                        "by their base64 bytes; default 16MiB): a larger one is not stored; store: true asked with "
                        "an input already over it is a 400 before generation")
    p.add_argument("--responses-max-store-size", type=parse_size, default=ServerConfig.responses_max_store_bytes,
                   metavar="SIZE",
                   help="largest the store file of stored responses and chat completions may grow (default 1GiB; "
                        "at least --responses-max-row-size): after a write that takes it over, the oldest rows go "
                        "and the file shrinks back")
    p.add_argument("--allow-client-paths", action=argparse.BooleanOptionalAction, default=None,
                   help="let clients name model files and folders on this machine (loaded on demand); "
                        "default: only when bound to loopback")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="backends and routing (TOML: [router], [[backends]], [models.NAME]; see velollm/router/"
                        "README.md): several servers behind this endpoint, balanced per model, with failover")
    add_upstream_arguments(p)
    add_cache_arguments(p)
    p.set_defaults(run=run)


def go_bool(value: str) -> bool:
    """An Ollama boolean variable as its envconfig.Bool reads one: trimmed of spaces, then of quotes (envconfig.Var),
    unset or empty is false, Go's ParseBool spellings of false are false, anything else is true."""
    value = value.strip().strip("\"'")
    return bool(value) and value not in ("0", "f", "F", "false", "FALSE", "False")


def _demo_in_cache(specs: tuple[str, ...], cache: str | None) -> tuple[str, ...]:
    """With $VELOLLM_CACHE set, `demo` is generated there and served from that folder."""
    if not cache or DEFAULT_MODEL not in specs:
        return specs
    from pathlib import Path

    from velollm.engine.loader.demo import ensure_demo

    folder = str(ensure_demo(Path(cache)))
    return tuple(folder if s == DEFAULT_MODEL else s for s in specs)


def build_config(args: argparse.Namespace, env: dict[str, str]) -> ServerConfig:
    config_file = _config_file(args)
    return _build_config(args, env, _upstream(args, env, config_file), config_file)


def _config_file(args: argparse.Namespace) -> RoutingFile | None:
    """--config, loaded once (ValueError when invalid, or when it names backends and --upstream is given)."""
    path = getattr(args, "config", None)
    if not path:
        return None
    from velollm.router.config import load_config

    config_file = load_config(path)
    if config_file.remote and (args.upstream or getattr(args, "proxy_only", False)):
        raise ValueError("--config names the backends: put the upstream there as a [[backends]] entry "
                         "(--upstream / --proxy-only are the one-backend shorthand)")
    return config_file


def _upstream(args: argparse.Namespace, env: dict[str, str], config_file: RoutingFile | None) -> UpstreamConfig | None:
    """The one upstream of --upstream ($OLLAMA_HOST), unless the config file names the backends."""
    return None if config_file is not None and config_file.remote else upstream_config(args, env)


def _complexity(config_file: RoutingFile | None) -> Any:
    """The [routing] table (the virtual `auto` model, velollm/complexity) of the config file, or None."""
    if config_file is None or not config_file.section("routing"):
        return None
    from pathlib import Path

    from velollm.complexity.policy import RoutingPolicy

    try:
        return RoutingPolicy.from_table(config_file.section("routing"), Path(config_file.path).parent)
    except ValueError as exc:
        raise ValueError(f"{config_file.path}: {exc}") from exc


def _native_models(args: argparse.Namespace, config_file: RoutingFile | None,
                   proxy_only: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(specifiers, served names) of the models this process runs: --model, then the config's native
    backends; `demo` when there is none, unless the config names remote backends (then this process is
    a pure router: no engine, no torch import)."""
    specs = tuple(args.model or ())
    names = tuple(args.served_model_name or specs)
    if args.served_model_name and len(names) != len(specs):
        raise ValueError(f"--served-model-name given {len(names)} times for {len(specs)} models; give one per --model")
    for backend in config_file.native if config_file is not None else ():
        specs += backend.models
        names += backend.served_names or backend.models
    if not specs and not proxy_only and not (config_file is not None and config_file.remote):
        specs = names = (DEFAULT_MODEL,)
    return specs, names


def _build_config(args: argparse.Namespace, env: dict[str, str], upstream: UpstreamConfig | None,
                  config_file: RoutingFile | None = None) -> ServerConfig:
    from velollm.api.keep_alive import parse_keep_alive_env

    # First: a bad flag or $VELOLLM_* kernel switch stops the server before anything loads (not even the demo).
    engine = EngineConfig(device=args.device, dtype=args.dtype, quantization=args.quantization,
                          max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len, max_queue=args.max_queue,
                          kv_cache_memory=args.kv_cache_memory, gpu_memory_utilization=args.gpu_memory_utilization,
                          enforce_eager=args.enforce_eager, **engine_options(args, env))
    origins = list(args.cors_origins or [])
    origins += [o.strip() for o in env.get("OLLAMA_ORIGINS", "").split(",") if o.strip()]
    proxy_only = bool(getattr(args, "proxy_only", False))
    specs, names = _native_models(args, config_file, proxy_only)
    if not specs:
        proxy_only = True
    upstream_name = upstream.url if upstream is not None else None
    if config_file is not None and config_file.remote:
        upstream_name = f"{len(config_file.remote)} backends of {config_file.path}"
    return ServerConfig(
        models=_demo_in_cache(specs, env.get("VELOLLM_CACHE")), config_file=config_file,
        routing=_complexity(config_file),
        served_model_names=names, proxy_only=proxy_only,
        max_loaded_models=args.max_loaded_models, keep_alive_s=parse_keep_alive_env(env.get("OLLAMA_KEEP_ALIVE")),
        host=args.host, port=args.port,
        engine=engine,
        api_key=args.api_key or env.get("VELOLLM_API_KEY") or None,
        cors_origins=tuple(origins), max_request_bytes=args.max_request_bytes,
        upstream=upstream_name,
        stats_interval_s=args.stats_interval,
        tool_retries=args.tool_retries, allow_client_paths=args.allow_client_paths, cache=cache_config(args, env),
        responses_db=_responses_db(env.get("VELOLLM_CACHE")), responses_max=args.responses_max,
        responses_max_row_bytes=args.responses_max_row_size,
        responses_max_store_bytes=args.responses_max_store_size,
        context_overflow=getattr(args, "context_overflow", None),
        context_compressor=_context_compressor(getattr(args, "context_compressor", None)),
        context_compressor_device=_compressor_device(getattr(args, "context_compressor_device", "cpu")),
        prefetch=getattr(args, "prefetch", True),
        turn_prefill=getattr(args, "turn_prefill", True),
        model_prefetch=getattr(args, "model_prefetch", True),
        host_cache_bytes=_host_cache_bytes(getattr(args, "host_cache_memory", None)),
        quantize_threads=getattr(args, "quantize_threads", None),
        prune_blobs=not go_bool(env.get("OLLAMA_NOPRUNE", "")),
        shutdown_timeout_s=getattr(args, "shutdown_timeout", ServerConfig.shutdown_timeout_s),
        header_timeout_s=getattr(args, "header_timeout", ServerConfig.header_timeout_s),
        body_timeout_s=getattr(args, "body_timeout", ServerConfig.body_timeout_s),
    )


def _context_compressor(spec: str | None) -> str | None:
    """--context-compressor's folder, checked (a ValueError stops the server with what is wrong)."""
    if spec is None:
        return None
    from velollm.context.lingua_folder import resolve_compressor_folder

    return str(resolve_compressor_folder(spec).path)


def _compressor_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--context-compressor-device {device}: no CUDA device here")
    return device


def _host_cache_bytes(requested: int | None) -> int:
    """--host-cache-memory, else a quarter of the machine's RAM."""
    if requested is not None:
        return requested
    import psutil

    return psutil.virtual_memory().total // 4


def _responses_db(cache: str | None) -> str:
    """Stored responses live beside the demo model: $VELOLLM_CACHE, else ~/.cache/velollm."""
    from pathlib import Path

    return str(Path(cache or Path.home() / ".cache" / "velollm") / "responses.sqlite")


def _relayed_responses(config: ServerConfig) -> Any:
    """The map of the responses an upstream's own Responses API stored, bounded as the local store is and kept
    beside it (relayed_responses.sqlite), so that both outlive a restart."""
    from pathlib import Path

    from velollm.proxy.relayed_responses import RelayedResponses

    db = config.responses_db
    path = None if db == ":memory:" else str(Path(db).with_name("relayed_responses.sqlite"))
    return RelayedResponses(config.responses_max, config.responses_max_age_s, path)


def run(args: argparse.Namespace) -> int:
    log_level = str(getattr(args, "log_level", "INFO")).lower()  # the top-level CLI's --log-level
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model and not getattr(args, "proxy_only", False) and not getattr(args, "config", None):
        logger.info("no --model given: serving the built-in 'demo' model (tiny, random weights: nonsense text)")
    env = dict(os.environ)
    try:
        config_file = _config_file(args)
        upstream_cfg = _upstream(args, env, config_file)
        config = _build_config(args, env, upstream_cfg, config_file)
    except ValueError as exc:
        logger.error("invalid arguments: %s", exc)
        return 2
    native = "no native model" if config.proxy_only else ", ".join(config.served_names)
    logger.info("serving %s on http://%s:%d (OpenAI: /v1, Ollama: /api); upstream: %s", native,
                config.host, config.port, config.upstream or "none")

    from velollm.commands.open_files import raise_open_files_limit

    raise_open_files_limit()
    server, failed = make_server(config, upstream_cfg, log_level)
    server.run()
    return 1 if failed or not server.started else 0


def make_server(config: ServerConfig, upstream_cfg: UpstreamConfig | None,
                log_level: str) -> tuple[Any, list[BaseException]]:
    """The uvicorn server for `config`, and the list a failed model load lands in (the server then stops)."""
    from velollm.api.app import create_app
    from velollm.api.shutdown import DrainingServer, make_uvicorn_config
    from velollm.api.startup_heap import freeze_startup_heap
    from velollm.proxy.gateway import UpstreamGateway

    failed: list[BaseException] = []
    server: DrainingServer | None = None

    def on_load_error(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    gateway: Any = None
    if config.config_file is not None and config.config_file.remote:
        from velollm.router.router import Router

        gateway = Router(config.config_file, _relayed_responses(config))
    elif upstream_cfg is not None:
        gateway = UpstreamGateway(upstream_cfg, proxy_only=config.proxy_only, relayed=_relayed_responses(config))
    app = create_app(config, {} if config.proxy_only else None, upstream=gateway, on_load_error=on_load_error,
                     on_ready=freeze_startup_heap)
    closed = app.state.velollm.metrics.connections_closed
    server = DrainingServer(make_uvicorn_config(app, config.host, config.port, log_level, config.header_timeout_s,
                                                on_close=lambda reason: closed.labels(reason).inc()),
                            app.state.velollm,
                            config.shutdown_timeout_s)
    return server, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="velollm")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":  # `python -m velollm.commands.serve ...` works without the top-level CLI
    sys.exit(main())
