"""Typed errors that the API layer maps to status codes (never `assert` on user input)."""

from __future__ import annotations

from collections.abc import Callable


class VeloLLMError(Exception):
    """Base class of every error VeloLLM raises on purpose."""


class InvalidRequest(VeloLLMError, ValueError):
    """A request field is missing, of the wrong type or out of range (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextOverflow(InvalidRequest):
    """The prompt does not fit in the model's context (HTTP 400)."""


class ModelNotFound(VeloLLMError):
    """No model of that name or path exists anywhere VeloLLM looks (HTTP 404)."""


class PathNotAllowed(ModelNotFound):
    """A client named a filesystem path on a server that does not load those (HTTP 404, said plainly)."""


class UnsupportedModel(VeloLLMError):
    """The model exists but VeloLLM cannot run it natively (architecture, tensor type, memory).

    The proxy falls back to the upstream on this error.
    """


class ModelLoadError(VeloLLMError):
    """A model file is corrupt or inconsistent (truncated, bad magic, missing blob)."""


class Overloaded(VeloLLMError):
    """The queue is full (HTTP 503 with Retry-After)."""


class RequestFailed(VeloLLMError):
    """One request failed an engine step on its own (HTTP 500 for that request; the others run on)."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(f"the engine could not run this request: {message}")
        self.request_id = request_id


class EngineDead(VeloLLMError):
    """The engine thread died; requests cannot be served."""


class ServeLocally(VeloLLMError):
    """Not a failure: the router chose this process's own engine for the request (the local replica of a
    model that remote backends also serve). The API runs it natively and calls `release` when done, or
    `failed(exc)` when the engine refused it before its first byte (Overloaded, EngineDead) and it goes to
    the other replicas."""

    def __init__(self, backend: str, release: Callable[[], None],
                 failed: Callable[[BaseException], None] = lambda exc: None) -> None:
        super().__init__(f"served by the local replica {backend!r}")
        self.backend = backend
        self.release = release
        self.failed = failed
