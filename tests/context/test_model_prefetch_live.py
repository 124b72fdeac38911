"""Model prefetch through a live `velollm serve` and the official ollama client: /api/show loads an
on-demand model ahead (the next chat records no cold load), a freed slot re-wakes the parked model used
last when a keep_alive runs out (not after `ollama stop`), prefetch never evicts a loaded model, --no-model-prefetch turns it off, shutdown during a prefetch
is clean, the virtual model's routes load ahead, a request for another model stops a running prefetch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ollama
import openai

from tests.api.conftest import ServerHandle
from tests.serve_process import REPO, start_serve, stop_serve

# On the CPU, where evicted models park in host memory (a GPU machine would unload them)
ARGS = ("--max-loaded-models", "1", "--kv-cache-memory", "16MiB", "--max-model-len", "256", "--device", "cpu")
LOADS = "velollm_model_loads_total"
PREFETCH = "velollm_model_prefetch_total"


def running(client: ollama.Client) -> list[str]:
    return [m.model for m in client.ps().models]


def wait_running(client: ollama.Client, model: str, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while model not in (names := running(client)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return names


def chat(client: ollama.Client, model: str, **extra) -> str:
    r = client.chat(model=model, messages=[{"role": "user", "content": "hi"}],
                    options={"num_predict": 4, "temperature": 0}, **extra)
    return r.message.content


def test_show_loads_the_model_ahead(tmp_path, two_models):
    a, b = two_models
    proc, url, _, _ = start_serve(tmp_path, *ARGS, "--max-loaded-models", "2")
    server, client = ServerHandle("live", url), ollama.Client(host=url, timeout=120)
    try:
        assert running(client) == ["demo"]  # the pinned default only
        client.show(a)  # a user picked the model: it loads in the background, the answer does not wait
        assert a in wait_running(client, a)
        chat(client, a)
        assert server.metric(LOADS, model=a, kind="cold") == 0  # the chat found it loaded
        assert server.metric(LOADS, model=a, kind="prefetch") == 1
        assert server.metric(PREFETCH, model=a, outcome="used") == 1
        client.show(b)
        chat(client, b)  # at once: it waits for the load that the show started (or finds it done)
        # One load either way: a chat that arrives before the prefetcher has resolved the name (a worker
        # thread) starts the load itself, and the prefetch then finds the model loaded.
        prefetched = server.metric(LOADS, model=b, kind="prefetch")
        assert server.metric(LOADS, model=b, kind="cold") + prefetched == 1
        assert server.metric(PREFETCH, model=b, outcome="used") == prefetched
    finally:
        stop_serve(proc)


def test_prefetch_never_evicts_and_a_freed_slot_rewakes_the_last_used(tmp_path, two_models):
    a, b = two_models
    proc, url, _, _ = start_serve(tmp_path, *ARGS, "--host-cache-memory", "256MiB")
    server, client = ServerHandle("live", url), ollama.Client(host=url, timeout=120)
    try:
        chat(client, a)
        client.show(b)  # the only slot holds a (idle, used more recently than a prediction is worth)
        time.sleep(1.0)
        assert a in running(client) and b not in running(client)
        assert server.metric(LOADS, model=b, kind="prefetch") == 0
        chat(client, b, keep_alive="2s")  # a request evicts a: parked in host memory
        assert server.metric(LOADS, model=b, kind="cold") == 1
        assert a in wait_running(client, a)  # b's keep_alive ran out: a (parked, used last) comes back ahead
        assert b not in running(client)
        chat(client, a)
        assert server.metric(LOADS, model=a, kind="cold") == 1 and server.metric(LOADS, model=a, kind="host") == 0
        assert server.metric(LOADS, model=a, kind="prefetch") == 1
        assert server.metric(PREFETCH, model=a, outcome="used") == 1
        chat(client, b)  # a parked again; `ollama stop` of b frees the slot but asks for the memory back
        client.generate(model=b, keep_alive=0)
        time.sleep(1.0)
        assert running(client) == ["demo"]
    finally:
        stop_serve(proc)


def test_no_model_prefetch_turns_it_off(tmp_path, two_models):
    a, _ = two_models
    proc, url, _, _ = start_serve(tmp_path, *ARGS, "--no-model-prefetch")
    server, client = ServerHandle("live", url), ollama.Client(host=url, timeout=120)
    try:
        client.show(a)
        time.sleep(1.0)
        assert a not in running(client)
        chat(client, a)
        assert server.metric(LOADS, model=a, kind="cold") == 1
    finally:
        stop_serve(proc)


def test_shutdown_during_a_prefetch_is_clean(tmp_path, two_models):
    a, _ = two_models
    proc, url, log, _ = start_serve(tmp_path, *ARGS)
    client = ollama.Client(host=url, timeout=120)
    client.show(a)
    deadline = time.monotonic() + 30
    while "ahead (prefetch)" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    text = log.read_text()
    assert "ahead (prefetch)" in text and "Traceback" not in text, text[-3000:]


def test_the_virtual_models_routes_load_ahead(tmp_path, two_models):
    a, b = two_models
    config = tmp_path / "velollm.toml"
    config.write_text(f'[routing]\nname = "auto"\ndefault = "{a}"\n\n[[routing.rules]]\nname = "code"\n'
                      f'model = "{b}"\ncode = true\n')
    proc, url, _, _ = start_serve(tmp_path, *ARGS, "--max-loaded-models", "2", "--config", str(config))
    server, client = ServerHandle("live", url), ollama.Client(host=url, timeout=120)
    try:
        chat(client, "auto")  # routed to the default (a, loaded for it); b, the other route, loads ahead
        assert b in wait_running(client, b)
        r = client.chat(model="auto", messages=[{"role": "user", "content": "```python\nimport os\n```\nfix it"}],
                        options={"num_predict": 4})
        assert r.model == b
        assert server.metric(LOADS, model=a, kind="cold") == 1 and server.metric(LOADS, model=b, kind="cold") == 0
        assert server.metric(PREFETCH, model=b, outcome="used") == 1
    finally:
        stop_serve(proc)


def test_a_request_for_another_model_stops_a_running_prefetch(tmp_path, two_models):
    """A prefetch of b is loading (slowly: tests/hooks/slow_load); a chat for a does not wait for it: b's load
    stops at its next tensor, its memory is freed, and it is counted as a cancelled prefetch. Once a has loaded,
    a slot being free, b's prediction is queued again and loads ahead; a request for b then uses that load."""
    a, b = two_models
    hook = Path(__file__).resolve().parents[1] / "hooks" / "slow_load"
    per_tensor = 0.5
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(hook), str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "VELOLLM_TEST_SLOW_LOAD": f"{Path(b).name}:{per_tensor}"}
    proc, url, log, _ = start_serve(tmp_path, *ARGS, "--max-loaded-models", "2", env=env)
    server, client = ServerHandle("live", url), ollama.Client(host=url, timeout=120)
    try:
        client.show(b)  # the prediction: b loads ahead, half a second a tensor
        deadline = time.monotonic() + 60
        while "ahead (prefetch)" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.01)
        time.sleep(2 * per_tensor)  # a few tensors in
        started = time.monotonic()
        assert chat(client, a) is not None
        waited = time.monotonic() - started
        num_tensors = len(tensor_names(a))
        assert waited < num_tensors * per_tensor / 2, (waited, num_tensors)  # b's whole load: num_tensors x 0.5 s
        assert server.metric(PREFETCH, model=b, outcome="cancelled") == 1
        assert server.metric(LOADS, model=b, kind="prefetch") == 0 and server.metric(LOADS, model=a, kind="cold") == 1
        assert sorted(running(client)) == sorted(["demo", a])  # nothing of b stays loaded
        deadline = time.monotonic() + 30  # logged as a's load ended
        while "queued again to load ahead" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        openai_client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        assert openai_client.chat.completions.create(model=b, messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=2).choices  # waits for b's second prefetch
        assert server.metric(LOADS, model=b, kind="prefetch") == 1 and server.metric(LOADS, model=b, kind="cold") == 0
        assert server.metric(PREFETCH, model=b, outcome="used") == 1
        assert server.metric(PREFETCH, model=b, outcome="cancelled") == 1
    finally:
        stop_serve(proc)
    text = log.read_text()
    assert "loading model" in text and "ahead stopped" in text and "Traceback" not in text, text[-3000:]


def tensor_names(path: str) -> list[str]:
    """The tensor names of a demo model folder (its safetensors files)."""
    from safetensors import safe_open

    names: list[str] = []
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            names.extend(f.keys())
    return names
