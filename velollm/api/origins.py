"""Which browser origins may use the server, as Ollama decides it (middleware.py answers 403 to the others).

A browser page on another origin can send "simple" requests (POST with `Content-Type: text/plain`)
without a CORS preflight, so refusing the preflight is not enough: like Ollama, any request whose
`Origin` header is not allowed gets a 403 before it runs. Requests without an `Origin` (SDKs, curl,
the CLI) are not browser requests and are unaffected; same-origin requests (the status page, whose
origin is the server's own Host) are allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# Ollama's built-in allowed origins (OLLAMA_ORIGINS adds to these): loopback hosts on any port, and
# the schemes of desktop apps and editor webviews.
DEFAULT_ORIGIN_PATTERN = (r"https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?"
                          r"|app://.*|file://.*|tauri://.*|vscode-webview://.*|vscode-file://.*")


def _pattern(origin: str) -> str:
    """One allowed origin as a regex: `*` matches anything (Ollama's wildcards), the rest literally."""
    return ".*".join(re.escape(part) for part in origin.strip().lower().split("*"))


@dataclass(frozen=True)
class OriginPolicy:
    """The allowed origins: Ollama's defaults plus `extra` (`--cors-origins`, `OLLAMA_ORIGINS`), where
    `*` alone allows every origin and `https://*.example.com` allows its subdomains."""

    extra: tuple[str, ...] = ()

    @property
    def regex(self) -> str:
        """Every allowed origin as one regex (Starlette's CORSMiddleware `allow_origin_regex`)."""
        patterns = [DEFAULT_ORIGIN_PATTERN, *(_pattern(o) for o in self.extra if o.strip())]
        return "^(" + "|".join(f"(?:{p})" for p in patterns) + ")$"

    def allows(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower()
        if host is not None and origin.split("://", 1)[-1] == host.strip().lower():
            return True  # same origin: a page this server served
        return self._compiled.fullmatch(origin) is not None

    @cached_property
    def _compiled(self) -> re.Pattern[str]:
        return re.compile(self.regex, re.IGNORECASE)
