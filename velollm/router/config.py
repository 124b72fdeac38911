"""The routing configuration: `velollm serve --config velollm.toml`, read and validated here, once.

A TOML file with these tables (every key is documented in velollm/router/README.md):

    [router]          defaults for every model: balancing policy, health checks, retries, queue bounds
    [[backends]]      one per backend: url, kind, models, max_concurrency, timeouts (kind "native": the
                      models this process runs itself, as --model would)
    [models."NAME"]   per-model overrides (policy, load_margin)
    [routing]         routing by complexity (the virtual `auto` model): velollm/complexity reads it

Other modules read their own table from the loaded file: `RoutingFile.section("routing")` returns that
table as parsed TOML (an empty dict when absent), unvalidated here; `KNOWN_SECTIONS` lists the tables this
module validates and `RESERVED_SECTIONS` those it leaves to other modules. Any other top-level key is an
error, so a typo never passes silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from velollm.wire.names import name_key

Policy = Literal["least-outstanding", "round-robin", "prefix-aware"]
POLICIES: tuple[str, ...] = ("least-outstanding", "round-robin", "prefix-aware")
BackendKind = Literal["velollm", "vllm", "ollama", "llamacpp", "openai", "auto", "native"]
BACKEND_KINDS: tuple[str, ...] = ("velollm", "vllm", "ollama", "llamacpp", "openai", "auto", "native")
KNOWN_SECTIONS = ("router", "backends", "models")
RESERVED_SECTIONS = ("routing",)


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid (the message names the file and the key)."""


@dataclass(frozen=True)
class RouterConfig:
    """`[router]`: how requests are balanced and how backends are watched (seconds for durations)."""

    policy: Policy = "least-outstanding"
    retries: int = 2  # other replicas tried when one fails before the first byte reached the client
    health_interval_s: float = 1.0  # active check period; 0 turns active checks off
    health_timeout_s: float = 1.0
    eject_after_failures: int = 3  # consecutive 5xx / broken answers; a connection error ejects at once
    readmit_after_s: float = 5.0  # with active checks off: an ejected backend is tried again after this
    refresh_interval_s: float = 30.0  # model lists fetched again; 0: only on a miss
    max_queue: int = 256  # requests waiting for a slot of one backend; 503 beyond
    queue_timeout_s: float = 600.0  # longest wait for a slot; 503 after
    retry_after_s: int = 2  # Retry-After of the 503 sent when no replica can take the request
    load_margin: float = 0.5  # prefix-aware: a replica may hold up to (1 + margin) x its share, + 1
    prefix_block_bytes: int = 256  # prefix-aware: bytes (UTF-8) per hashed block of the prompt text
    prefix_table_size: int = 200_000  # prefix-aware: block hashes remembered per model (LRU)
    # A name that a native backend and remote ones serve: False, the local engine is one more replica of the
    # model's policy; True, it answers every request (the remote replicas are then never used for that name).
    local_first: bool = False

    def __post_init__(self) -> None:
        _check_policy(self.policy, "router.policy")
        _check_bool(self.local_first, "router.local_first")
        _at_least(self, 0, "retries", "eject_after_failures", "max_queue")
        _at_least(self, 1, "eject_after_failures", "prefix_block_bytes", "prefix_table_size", "retry_after_s")
        _positive(self, "health_timeout_s", "readmit_after_s", "queue_timeout_s")
        _non_negative(self, "health_interval_s", "refresh_interval_s", "load_margin")


@dataclass(frozen=True)
class BackendConfig:
    """One `[[backends]]` entry. `models`: the names it serves (empty: discovered from its listing);
    for kind "native", the model specifiers this process loads (`served_names` renames them)."""

    name: str
    url: str = ""
    kind: BackendKind = "auto"
    models: tuple[str, ...] = ()
    served_names: tuple[str, ...] = ()
    max_concurrency: int = 0  # requests sent at once (Ollama's NUM_PARALLEL); 0: unbounded
    api_key: str | None = None
    connect_timeout_s: float = 2.0
    first_byte_timeout_s: float = 600.0
    idle_timeout_s: float = 120.0
    # GET path of the active check; "": /health (velollm, or an auto / ollama backend that is a VeloLLM),
    # /api/version (ollama) or /v1/models
    health_path: str = ""

    def __post_init__(self) -> None:
        where = f"backend {self.name!r}"
        if not self.name:
            raise ConfigError("every [[backends]] entry needs a name")
        if self.kind not in BACKEND_KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(BACKEND_KINDS)}, not {self.kind!r}")
        if self.kind == "native":
            if self.url:
                raise ConfigError(f"{where}: a native backend runs in this process and has no url")
            if not self.models:
                raise ConfigError(f"{where}: a native backend needs models (specifiers, as for --model)")
            if self.served_names and len(self.served_names) != len(self.models):
                raise ConfigError(f"{where}: served_names must name each of models")
            return
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must start with http:// or https://, got {self.url!r}")
        if self.served_names:
            raise ConfigError(f"{where}: served_names is for native backends")
        if self.max_concurrency < 0:
            raise ConfigError(f"{where}: max_concurrency must be >= 0 (0: unbounded)")
        for key in ("connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{where}: {key} must be > 0")

    @property
    def speaks_both(self) -> bool:
        """VeloLLM answers /v1 and /api alike: requests pass through in the client's API, never converted."""
        return self.kind == "velollm"

    @property
    def upstream_kind(self) -> Literal["ollama", "openai", "auto"]:
        """The proxy's kind: how the backend is listed and which API requests are converted to."""
        if self.kind in ("velollm", "ollama"):
            return "ollama"
        return "auto" if self.kind == "auto" else "openai"


@dataclass(frozen=True)
class ModelRouting:
    """`[models."NAME"]`: how requests for one model name are balanced (unset: the [router] value)."""

    policy: Policy | None = None
    load_margin: float | None = None
    local_first: bool | None = None

    def __post_init__(self) -> None:
        if self.local_first is not None:
            _check_bool(self.local_first, "models.*.local_first")
        if self.policy is not None:
            _check_policy(self.policy, "models.*.policy")
        if self.load_margin is not None and not self.load_margin >= 0:
            raise ConfigError("models.*.load_margin must be >= 0")


@dataclass(frozen=True)
class RoutingFile:
    """The whole loaded file: validated tables plus the raw reserved ones (`section`)."""

    router: RouterConfig = field(default_factory=RouterConfig)
    backends: tuple[BackendConfig, ...] = ()
    models: dict[str, ModelRouting] = field(default_factory=dict)
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def section(self, name: str) -> dict[str, Any]:
        """A reserved table ("routing") as parsed, for the module that owns it; {} when absent."""
        if name not in RESERVED_SECTIONS:
            raise KeyError(f"{name!r} is not a reserved section ({', '.join(RESERVED_SECTIONS)})")
        value = self.raw.get(name, {})
        return dict(value) if isinstance(value, dict) else {}

    @property
    def remote(self) -> tuple[BackendConfig, ...]:
        return tuple(b for b in self.backends if b.kind != "native")

    @property
    def native(self) -> tuple[BackendConfig, ...]:
        return tuple(b for b in self.backends if b.kind == "native")

    def routing_for(self, model: str) -> tuple[Policy, float]:
        """(policy, load_margin) for a model name."""
        own = self._own(model)
        return (own.policy or self.router.policy,
                self.router.load_margin if own.load_margin is None else own.load_margin)


    def local_first_for(self, model: str) -> bool:
        """Whether the native backend answers every request for `model` before its remote replicas."""
        own = self._own(model).local_first
        return self.router.local_first if own is None else own

    def _own(self, model: str) -> ModelRouting:
        key = name_key(model)
        return next((v for k, v in self.models.items() if name_key(k) == key), ModelRouting())


def load_config(path: str | Path) -> RoutingFile:
    """Reads and validates `path`; ConfigError (a ValueError) names what is wrong."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return parse_config(data, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_config(data: dict[str, Any], path: str = "") -> RoutingFile:
    """A RoutingFile from TOML already parsed into `data`."""
    unknown = sorted(set(data) - set(KNOWN_SECTIONS) - set(RESERVED_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; known: "
                          f"{', '.join(KNOWN_SECTIONS + RESERVED_SECTIONS)}")
    router = _build(RouterConfig, _table(data, "router"), "router")
    entries = data.get("backends", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("backends must be an array of tables ([[backends]])")
    backends = tuple(_backend(e, i) for i, e in enumerate(entries))
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"backend names must be unique: {', '.join(duplicates)}")
    models = {str(name): _build(ModelRouting, table, f"models.{name}")
              for name, table in _table(data, "models").items()}
    return RoutingFile(router=router, backends=backends, models=models, path=path, raw=data)


def _backend(entry: dict[str, Any], index: int) -> BackendConfig:
    entry = dict(entry)
    entry.setdefault("name", f"backend{index}")
    for key in ("models", "served_names"):
        value = entry.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"backends[{index}].{key} must be a list of names")
        entry[key] = tuple(value)
    if isinstance(entry.get("url"), str):
        entry["url"] = entry["url"].rstrip("/").removesuffix("/v1")  # OpenAI base URLs often end in /v1
    return _build(BackendConfig, entry, f"backends[{index}]")


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table ([{name}])")
    return value


def _build(cls: Any, table: dict[str, Any], where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    fields = cls.__dataclass_fields__
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    for key, value in table.items():
        default = fields[key].default
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue  # strings, lists, optional values: checked by the dataclass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
        if isinstance(default, int) and not float(value).is_integer():
            raise ConfigError(f"{where}.{key} must be a whole number, got {value!r}")
        table = {**table, key: int(value) if isinstance(default, int) else float(value)}
    try:
        return cls(**table)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _check_policy(policy: str, key: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"{key} must be one of {', '.join(POLICIES)}, not {policy!r}")


def _check_bool(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")


def _at_least(obj: Any, minimum: int, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) < minimum:
            raise ConfigError(f"router.{key} must be >= {minimum}")


def _positive(obj: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not value > 0 or math.isnan(value):
            raise ConfigError(f"router.{key} must be > 0")


def _non_negative(obj: Any, *keys: str) -> None:
    for key in keys:
        if not getattr(obj, key) >= 0:
            raise ConfigError(f"router.{key} must be >= 0")
