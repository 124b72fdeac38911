"""deploy/: the Grafana dashboard queries only metrics the server exports, and the Prometheus config parses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def test_dashboard_queries_exported_metrics(stub_server):
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(f"{stub_server.url}/api/generate", json={"model": "demo", "prompt": "hi", "stream": False,
                                                        "options": {"num_predict": 4}}, timeout=30)
    families = list(text_string_to_metric_families(httpx.get(f"{stub_server.url}/metrics", timeout=10).text))
    exported = {f.name for f in families} | {s.name for f in families for s in f.samples}
    dashboard = json.loads((DEPLOY / "grafana" / "velollm-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15 and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = {m for e in exprs for m in re.findall(r"\bvelollm_[a-z_]+", e)}
    missing = {m for m in used if m not in exported and not any(
        m.endswith(s) and m.removesuffix(s) in exported for s in _SUFFIXES)}
    assert not missing, f"the dashboard queries metrics the server does not export: {sorted(missing)}"
    assert {"velollm_tokens_total", "velollm_kv_cache_usage_ratio", "velollm_time_to_first_token_seconds_bucket",
            "velollm_engine_info"} <= used


def test_prometheus_config():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
