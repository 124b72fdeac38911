"""ServerConfig: everything `velollm serve` decides once at start-up (built by the CLI, read by the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from velollm.config import EngineConfig

if TYPE_CHECKING:
    from velollm.cache.config import ResponseCacheConfig
    from velollm.complexity.policy import RoutingPolicy
    from velollm.router.config import RoutingFile

DEFAULT_MODEL = "demo"


@dataclass(frozen=True)
class ServerConfig:
    """How one server runs. `served_model_names[i]` names `models[i]` (default: the specifier as given)."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    served_model_names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    engine: EngineConfig = field(default_factory=EngineConfig)  # every native engine's, pinned and on demand
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()  # added to the loopback origins Ollama allows by default
    max_request_bytes: int = 32 * 1024 * 1024  # body limit (413 beyond)
    upstream: str | None = None  # Ollama / OpenAI-compatible URL for models not served natively (proxy)
    stats_interval_s: float = 10.0  # periodic stats log line; 0 turns it off
    max_loaded_models: int = 1  # on-demand models loaded at once (the --model ones are pinned, not counted)
    keep_alive_s: float = 300.0  # default keep_alive of on-demand models (OLLAMA_KEEP_ALIVE); inf = forever
    proxy_only: bool = False  # no engine at all: every request goes to the upstream
    tool_retries: int = 2  # new generations with a corrective message after an unusable tool call
    # May clients name filesystem paths as models (loaded on demand)? None: only when bound to loopback.
    allow_client_paths: bool | None = None
    cache: ResponseCacheConfig | None = None  # response caches (--cache, --semantic-cache); None: off
    # Stored /v1/responses (store: true): an SQLite file (":memory:": kept while the server runs), and
    # the retention limit: at most this many, none older than responses_max_age_s; a row (a response, a
    # stored chat completion) over responses_max_row_bytes as stored is not kept (velollm/responses/row_size.py);
    # the oldest rows go while the file is over responses_max_store_bytes (velollm/responses/store_size.py).
    responses_db: str = ":memory:"
    responses_max: int = 10_000
    responses_max_age_s: float = 30 * 86400.0
    responses_max_row_bytes: int = 16 << 20
    responses_max_store_bytes: int = 1 << 30
    # A chat longer than its context: error | truncate | compress; None: error on /v1, truncate on /api.
    context_overflow: str | None = None
    # --context-compressor: an LLMLingua-2 classifier folder (checked at start) for `compress`; None: off
    context_compressor: str | None = None
    context_compressor_device: str = "cpu"  # where the classifier runs: cpu, cuda, cuda:N
    host_cache_bytes: int = 0  # weights of CPU models evicted by max_loaded_models kept asleep (0: off)
    # threads of a local create's quantization (api/create_quantize.py); None: chunk_pool.default_workers()
    quantize_threads: int | None = None
    # at start, remove the store's blobs no manifest names, an hour old or more (Ollama's prune; OLLAMA_NOPRUNE: off)
    prune_blobs: bool = True
    shutdown_timeout_s: float = 30.0  # on SIGTERM: how long running requests may go on (api/drain.py)
    # A connection's time to send a complete request line and headers, from its accept and from the end of each
    # response (api/header_deadline.py); the longest a client may stay silent in the middle of a JSON body (408).
    header_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    prefetch: bool = True  # next-turn prompts start with the previous turn's exact ids (velollm.context.turn_cache)
    # with prefetch: the next turn's prefix, as the template rewrites the answer, prefilled while the engine is idle
    turn_prefill: bool = True
    model_prefetch: bool = True  # predicted on-demand models loaded ahead into free slots (context.model_prefetch)
    routing: RoutingPolicy | None = None  # the virtual model that routes by complexity ([routing]); None: off
    # `--config velollm.toml` as loaded (velollm.router.config): backends, balancing, and the raw reserved
    # tables ([routing], read with `config_file.section("routing")`); None without --config
    config_file: RoutingFile | None = None

    def __post_init__(self) -> None:
        if not self.models and not self.proxy_only:
            raise ValueError("at least one model is required")
        if self.proxy_only and self.models:
            raise ValueError("--proxy-only serves no native model; drop --model")
        if any(not m for m in self.models):
            raise ValueError("model specifiers must be non-empty")
        if self.served_model_names and len(self.served_model_names) != len(self.models):
            raise ValueError(f"--served-model-name given {len(self.served_model_names)} times for "
                             f"{len(self.models)} models; give one per --model")
        names = self.served_names
        if len(set(names)) != len(names):
            raise ValueError(f"served model names must be unique, got {list(names)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be non-empty when given")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.tool_retries < 0:
            raise ValueError(f"tool_retries must be >= 0, got {self.tool_retries}")
        if self.max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be >= 1, got {self.max_loaded_models}")
        if self.keep_alive_s < 0:
            raise ValueError(f"keep_alive_s must be >= 0 (math.inf: forever), got {self.keep_alive_s}")
        if self.responses_max < 1 or self.responses_max_age_s <= 0:
            raise ValueError("responses_max must be >= 1 and responses_max_age_s positive")
        if self.responses_max_row_bytes < 1:
            raise ValueError(f"responses_max_row_bytes must be >= 1, got {self.responses_max_row_bytes}")
        if self.responses_max_store_bytes < self.responses_max_row_bytes:
            raise ValueError(f"responses_max_store_bytes ({self.responses_max_store_bytes}) must be at least "
                             f"responses_max_row_bytes ({self.responses_max_row_bytes}): one row would fill the "
                             "store (--responses-max-store-size under --responses-max-row-size)")
        if self.quantize_threads is not None and self.quantize_threads < 1:
            raise ValueError(f"quantize_threads (--quantize-threads) must be >= 1, got {self.quantize_threads}")
        if self.host_cache_bytes < 0:
            raise ValueError(f"host_cache_bytes must be >= 0, got {self.host_cache_bytes}")
        if self.context_overflow not in (None, "error", "truncate", "compress"):
            raise ValueError(f"context_overflow must be error, truncate or compress, got {self.context_overflow!r}")
        if self.context_compressor_device != "cpu" and not self.context_compressor_device.startswith("cuda"):
            raise ValueError(f"context_compressor_device must be cpu or cuda[:N], got {self.context_compressor_device!r}")
        if self.routing is not None and self.routing.name in self.served_names:
            raise ValueError(f"the routing model name {self.routing.name!r} is also a served model name")
        if not self.shutdown_timeout_s >= 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, got {self.shutdown_timeout_s}")
        if self.stats_interval_s < 0:
            raise ValueError(f"stats_interval_s must be >= 0, got {self.stats_interval_s}")

    @property
    def served_names(self) -> tuple[str, ...]:
        return self.served_model_names or self.models

    @property
    def client_paths_allowed(self) -> bool:
        return self.is_loopback if self.allow_client_paths is None else self.allow_client_paths

    @property
    def is_loopback(self) -> bool:
        """True when bound to a loopback address only (then the Host-header check applies, as in Ollama)."""
        import ipaddress

        if self.host in ("localhost", ""):
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False
