"""The served process's start-up heap is frozen once its models are ready (velollm/api/startup_heap.py), so a
request that allocates much no longer triggers full collections that walk the imports while holding the GIL
(the event loop stopped meanwhile: tests/api/test_hostile_input.py's megabyte template)."""

from __future__ import annotations

import subprocess
import sys

from starlette.testclient import TestClient

from tests.api.stub_engine import StubEngine
from tests.serve_process import REPO
from velollm.api.app import create_app
from velollm.api.server_config import ServerConfig

FRESH = """
import gc, weakref
from velollm.api.startup_heap import freeze_startup_heap

class Node:
    pass

cycle = Node(); cycle.self = cycle
gone = weakref.ref(cycle)
del cycle
assert gc.get_freeze_count() == 0
freeze_startup_heap()
assert gone() is None, "start-up's cyclic garbage was frozen, not freed"
print(gc.get_freeze_count())
"""


def test_freeze_frees_cyclic_garbage_then_freezes_the_rest():
    """In a fresh interpreter, as the served process does it: pytest's own heap is not to be frozen."""
    out = subprocess.run([sys.executable, "-c", FRESH], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 1000  # the imports'


THAWED_AT_EXIT = """
import triton, triton.language  # nanobind's types: what outlived their modules, frozen
from velollm.api.startup_heap import freeze_startup_heap

freeze_startup_heap()
"""


def test_the_heap_is_thawed_at_exit():
    """Frozen to the end, triton's nanobind objects outlived their modules' teardown: hundreds of "nanobind: leaked"
    lines at every exit of `velollm serve`, and a segmentation fault for `velollm run`'s in-process server."""
    out = subprocess.run([sys.executable, "-c", THAWED_AT_EXIT], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nanobind: leaked" not in out.stderr, out.stderr[-2000:]


def test_on_ready_runs_once_before_health_says_ready():
    seen: list[int] = []
    app = create_app(ServerConfig(stats_interval_s=0), {"demo": StubEngine()}, on_ready=lambda: seen.append(1))
    assert seen == []
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/health").status_code == 200 and seen == [1]
        assert client.get("/health").status_code == 200 and seen == [1]


def test_a_served_process_freezes_its_heap_once_its_model_loaded(live_server):
    """`velollm serve --model demo` (the CLI's on_ready, after the load in the lifespan's background task)."""
    assert "start-up heap frozen" in live_server.log.read_text()
