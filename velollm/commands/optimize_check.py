"""`velollm optimize --check`: a running server's settings (from its /metrics) against the advice."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from velollm.commands.client import Sample, ServerClient, ServerError, server_url
from velollm.commands.fits import ModelFit
from velollm.hw.recommend import Recommendation

_KV_TOLERANCE = 0.1  # a KV cache within 10% of the advice is as advised (block rounding, measured free memory)


@dataclass(frozen=True)
class Finding:
    model: str
    setting: str
    server: str
    advised: str
    ok: bool


def served_settings(samples: Sequence[Sample]) -> dict[str, dict[str, str]]:
    """model -> {device, dtype, cuda_graphs, kv_cache_dtype, async_scheduling, max_num_seqs, max_model_len,
    kv_cache_bytes} from /metrics."""
    out: dict[str, dict[str, str]] = {}
    gauges = {"velollm_max_num_seqs": "max_num_seqs", "velollm_max_model_len": "max_model_len",
              "velollm_kv_cache_bytes": "kv_cache_bytes"}
    for s in samples:
        model = s.labels.get("model")
        if model is None:
            continue
        if s.name == "velollm_engine_info":
            out.setdefault(model, {}).update({k: v for k, v in s.labels.items() if k != "model"})
        elif s.name in gauges:
            out.setdefault(model, {})[gauges[s.name]] = f"{s.value:.0f}"
    return out


def compare(served: Mapping[str, Mapping[str, str]], rec: Recommendation, fits: Sequence[ModelFit]) -> list[Finding]:
    by_name = {f.name: f for f in fits if f.native}
    findings = []
    for model, have in served.items():
        fit = by_name.get(model)
        want = {"device": rec.device, "dtype": fit.precision if fit else rec.dtype,
                "max_num_seqs": str(rec.max_num_seqs)}
        if rec.device == "cuda":
            want["cuda_graphs"] = "true"
        if fit is not None:
            want["max_model_len"] = str(fit.max_model_len)
        advised = {s.name: s.value for s in rec.settings}
        if advised.get("--kv-cache-dtype") == "fp8":
            want["kv_cache_dtype"] = "float8_e4m3fn"  # the engine_info label of an fp8 cache
        if "--async-scheduling" in advised:  # compared only where advised (no advice names it today)
            want["async_scheduling"] = "true"
        for key, advised in want.items():
            value = have.get(key, "?")
            ok = value.split(":")[0] == advised if key == "device" else value == advised
            findings.append(Finding(model, key, value, advised, ok))
        if rec.kv_cache_memory is not None and "kv_cache_bytes" in have:
            kv = int(have["kv_cache_bytes"])
            ok = abs(kv - rec.kv_cache_memory) <= _KV_TOLERANCE * rec.kv_cache_memory
            findings.append(Finding(model, "kv_cache_memory", f"{kv >> 20}MiB", f"{rec.kv_cache_memory >> 20}MiB", ok))
    return findings


def check_server(env: Mapping[str, str], rec: Recommendation, fits: Sequence[ModelFit]) -> int:
    """0: as advised; 1: something differs (each difference printed); 2: no server or nothing loaded."""
    from rich.console import Console
    from rich.table import Table

    url = server_url(env)
    try:
        with ServerClient(url, timeout=10, api_key=env.get("VELOLLM_API_KEY")) as client:
            served = served_settings(client.metrics())
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not served:
        print(f"error: the server at {url} runs no native model (nothing to compare)", file=sys.stderr)
        return 2
    findings = compare(served, rec, fits)
    table = Table(title=f"{url} against `velollm optimize`")
    for column in ("MODEL", "SETTING", "SERVER", "ADVISED", ""):
        table.add_column(column)
    for f in findings:
        table.add_row(f.model, f.setting, f.server, f.advised, "ok" if f.ok else "[bold red]differs[/]")
    Console().print(table)
    return 0 if all(f.ok for f in findings) else 1
