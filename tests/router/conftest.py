"""tests/proxy's helpers (LlamaServer, gguf_fixture, proxy_servers) import each other by bare module name, as
pytest's rootdir-relative imports allow when tests/proxy is collected; make that hold when only tests/router is."""

from __future__ import annotations

import sys
from pathlib import Path

_PROXY_TESTS = str(Path(__file__).resolve().parents[1] / "proxy")
if _PROXY_TESTS not in sys.path:
    sys.path.insert(0, _PROXY_TESTS)
