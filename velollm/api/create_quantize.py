"""`quantize` in POST /api/create without an Ollama upstream: the model layer written again at one of Ollama's
quantize levels, q4_K_M, q4_K_S or q8_0 (`q4_K` names q4_K_M, as in Ollama), as `ollama create -q` writes it:
Ollama's choice of type per tensor and ggml's reference quantizers, bit for bit
(velollm/engine/loader/gguf_requantize.py). Another level is a 400 in Ollama's words ("unsupported quantization
type ... - supported types are ...").

The source's weights must be stored as F32, F16 or BF16 (Ollama's "quantization is only supported for F16 and F32
models"): the tensors' own types are checked (gguf_requantize.open_source), once, before the first progress line, so
a refusal is a 400 even when the answer is streamed, and a header whose file_type says F16 over quantized blocks is
refused as well. The new blob is written beside the others under a temporary name, hashed as its bytes are written
(never read back), and renamed into place at the end, so a failure leaves nothing behind. The progress lines are
Ollama's: `quantizing F16 model to Q4_K_M` (digest "0", total the source's size, completed growing as the tensors
are quantized, sent while it runs when the answer is streamed), `verifying conversion`, `creating new layer
sha256:...`. The chunks run on a thread per CPU (at most 8; `velollm serve --quantize-threads N` sets it): a 1B
model's F16 weights to Q4_K_M cost about 93 CPU seconds where llama.cpp's C quantizer costs 82
(benchmarks/quantize.py on the 2-core test box). A failure in one of them is this request's error, and a client that
leaves, streamed or not, before or after the first line, stops it at the next chunk (live_progress.ClientGone);
neither leaves a thread or the temporary blob behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from velollm.engine.loader.ollama_store import MODEL_MEDIA, blob_path
from velollm.errors import InvalidRequest

logger = logging.getLogger(__name__)

ALIASES = {"Q4_K": "Q4_K_M"}  # Ollama's ParseFileType
Line = dict[str, Any]


def quantize_model_layer(root: Path, value: Any, config: dict[str, Any], layers: list[dict[str, Any]],
                         lines: list[Line], emit: Callable[[Line], None] | None = None, threads: int | None = None,
                         written: list[Path] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, layers) with the model layer quantized to `value` on `threads` threads (None: as many as the
    process may use CPUs, at most 8); the progress lines appended to `lines`, or, with `emit`, the lines up to the
    new layer's sent to `emit` as they happen (`lines` keeps the rest). The new blob goes into `written` once it is
    in place (the caller's to remove when what follows fails)."""
    from velollm.engine.loader.chunk_pool import default_workers
    from velollm.engine.loader.gguf_requantize import TARGETS, RequantizeError, open_source, requantize

    quant = value.upper() if isinstance(value, str) else ""
    quant = ALIASES.get(quant, quant)
    if quant not in TARGETS:
        raise InvalidRequest(f"unsupported quantization type {quant or repr(value)} - supported types are "
                             "Q4_K_S, Q4_K_M, Q8_0", param="quantize")  # (Ollama's also lists F32 and F16)
    model = next((layer for layer in reversed(layers) if layer.get("mediaType") == MODEL_MEDIA), None)
    if model is None:
        raise InvalidRequest("quantize needs a model with weights (a GGUF model layer)", param="quantize")
    source = blob_path(root, str(model["digest"]))
    try:  # the one check of the source, before the first progress line: a refusal is a 400, not a stream's end
        opened = open_source(source)
    except RequantizeError as exc:
        raise InvalidRequest(str(exc), param="quantize") from None
    kind = opened.kind
    # Ollama's order: the quantization and its new layer, then the layers it keeps
    kept = [line for line in lines if line.get("status") != f"using existing layer {model['digest']}"]
    at = next((i for i, line in enumerate(kept) if str(line.get("status")).startswith("using existing layer")),
              len(kept))
    ours: list[Line] = []
    say = emit or ours.append
    for line in kept[:at]:
        say(line)
    size = source.stat().st_size
    progress = {"status": f"quantizing {kind} model to {quant}", "digest": "0", "total": size}
    say({**progress, "completed": 0})
    fd, name = tempfile.mkstemp(prefix="sha256-", dir=source.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        threads = threads or default_workers()
        logger.info("quantizing %s (%s) to %s on %d thread%s", model["digest"], kind, quant, threads,
                    "" if threads == 1 else "s")
        result = requantize(opened, tmp, quant, _reporter(progress, emit), threads)  # hashed as it was written
        if emit is None:
            say({**progress, "completed": size})
        say({"status": "verifying conversion"})
        digest, new_size = result.digest, result.size
        target = blob_path(root, digest)
        if target.is_file():
            tmp.unlink()
        else:
            os.chmod(tmp, 0o644)  # as the store's other blobs (mkstemp makes 0600): an Ollama of another user reads it
            os.replace(tmp, target)
            if written is not None:
                written.append(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    say({"status": f"creating new layer {digest}"})
    lines[:] = ours + kept[at:]
    new_layer = {**model, "digest": digest, "size": new_size}
    return {**config, "file_type": quant}, [new_layer if layer is model else layer for layer in layers]


def _reporter(progress: Line, emit: Callable[[Line], None] | None) -> Callable[[int, int], None] | None:
    """requantize's `on_progress` as Ollama's lines (completed in the source's bytes), when they are streamed."""
    if emit is None:
        return None
    last = [-1]

    def report(done: int, total: int) -> None:
        completed = progress["total"] * done // max(total, 1)
        if completed != last[0]:
            last[0] = completed
            emit({**progress, "completed": completed})
    return report
