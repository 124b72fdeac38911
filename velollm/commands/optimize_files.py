"""The files `velollm optimize` writes: a serve script, an Ollama env file and a systemd drop-in, each
value preceded by its reason as a comment."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from velollm.commands.fits import ModelFit
from velollm.hw.recommend import Recommendation, Setting


@dataclass(frozen=True)
class SettingsFile:
    name: str  # relative path under the output folder
    text: str
    how: str  # how to apply it


def _comment(text: str) -> str:
    return "\n".join(f"# {line}" for line in text.splitlines())


def serve_script(rec: Recommendation, fits: Sequence[ModelFit], model: str | None, header: str) -> str:
    """`velollm-serve.sh`: the serve flags for this machine (with `--model` and its context when `model`
    is given), and the flags of every other native model as comments."""
    flags: list[tuple[str, str]] = []
    chosen = next((f for f in fits if f.name == model), None)
    if chosen is not None:
        weights = (f"{chosen.name}: {chosen.stored or '?'} weights computed in {chosen.precision}, "
                   f"{chosen.weight_bytes / 2**30:.1f} GiB")
        flags.append((f"--model {shlex.quote(chosen.name)}", weights))
        flags.append((f"--max-model-len {chosen.max_model_len}", _context_reason(chosen)))
    elif model is not None:
        flags.append((f"--model {shlex.quote(model)}", "not found in the Ollama store or HF cache here: loaded on demand if it can be"))
    flags += [(f"{s.name} {s.value}", s.reason) for s in rec.settings]
    if rec.device == "cuda":
        flags.append(("", "CUDA graphs stay on (no --enforce-eager): a decode step replays as one graph launch"))
    lines = ["#!/bin/sh", _comment(header), "#"]
    lines += [_comment(f"{flag}: {reason}" if flag else reason) for flag, reason in flags]
    lines.append("exec velollm serve " + " ".join(flag for flag, _ in flags if flag) + ' "$@"')
    others = [f for f in fits if f.native and f.name != model]
    if others:
        lines.append("")
        lines.append("# Other models that run natively here (add to the flags above):")
        lines += [f"#   {f.name}: --model {f.name} --max-model-len {f.max_model_len}  ({_context_reason(f)})"
                  for f in others]
    return "\n".join(lines) + "\n"


def _context_reason(f: ModelFit) -> str:
    fp8 = ", fp8 KV cache" if f.kv_cache_dtype == "fp8" else ""
    more = f" (with --kv-cache-dtype fp8: {f.kv_tokens_fp8:,} tokens)" if f.kv_tokens_fp8 else ""
    if f.max_model_len < f.context_length:
        return (f"the KV room ({f.kv_tokens:,} tokens{fp8}) is less than the model's {f.context_length:,}-token "
                f"context: a longer one could never be scheduled{more}")
    return (f"the model's full {f.context_length:,}-token context; the KV room{fp8} holds {f.full_contexts} "
            f"such sequences at once (more when they are shorter){more}")


def env_file(settings: Sequence[Setting], header: str) -> str:
    """`ollama.env`: KEY=VALUE lines (for `docker run --env-file`, or `set -a; . ollama.env`)."""
    lines = [_comment(header)]
    for s in settings:
        lines += [_comment(s.reason), f"{s.name}={s.value}"]
    return "\n".join(lines) + "\n"


def systemd_dropin(settings: Sequence[Setting], header: str) -> str:
    """`ollama.service.d/velollm.conf`: the same values for Ollama's systemd service."""
    lines = [_comment(header), "[Service]"]
    for s in settings:
        lines += [_comment(s.reason), f'Environment="{s.name}={s.value}"']
    return "\n".join(lines) + "\n"


def settings_files(rec: Recommendation, ollama: Sequence[Setting], fits: Sequence[ModelFit], model: str | None,
                   machine: str) -> list[SettingsFile]:
    header = f"written by `velollm optimize` for {machine}"
    return [
        SettingsFile("velollm-serve.sh", serve_script(rec, fits, model, header), "sh velollm-serve.sh"),
        SettingsFile("ollama.env", env_file(ollama, header),
                     "docker run --env-file ollama.env ... (or: set -a; . ./ollama.env; ollama serve)"),
        SettingsFile("ollama.service.d/velollm.conf", systemd_dropin(ollama, header),
                     "sudo cp -r ollama.service.d /etc/systemd/system/ && sudo systemctl daemon-reload "
                     "&& sudo systemctl restart ollama"),
    ]
