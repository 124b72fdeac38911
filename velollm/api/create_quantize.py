"""`quantize` in POST /api/create without an Ollama upstream: the model layer written again as Q8_0
(velollm/engine/loader/gguf_requantize.py: llama.cpp's Q8_0, bit for bit), as `ollama create -q q8_0` does.

Ollama's other levels (q4_K_M, q4_K_S) need its quantizer: a 400 says so and names the one VeloLLM does. The
source must hold F32, F16 or BF16 weights (Ollama's "quantization is only supported for F16 and F32 models").
The new blob is written beside the others under a temporary name and renamed into place once hashed, so a
failure leaves nothing behind; the progress lines are Ollama's: `quantizing F16 model to Q8_0` (digest "0",
total and completed bytes), `verifying conversion`, `creating new layer sha256:...`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from velollm.engine.loader.ollama_store import MODEL_MEDIA, blob_path
from velollm.errors import InvalidRequest

OLLAMA_ONLY = ("Q4_K_M", "Q4_K_S")


def quantize_model_layer(root: Path, value: Any, config: dict[str, Any], layers: list[dict[str, Any]],
                         lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, layers) with the model layer quantized to `value`; the progress lines appended to `lines`."""
    from velollm.engine.loader.gguf import quantization_level
    from velollm.engine.loader.gguf_file import GGUFFile
    from velollm.engine.loader.ollama_store_edit import file_digest
    from velollm.engine.loader.gguf_requantize import SOURCE_TYPES, TARGETS, RequantizeError, requantize

    quant = value.upper() if isinstance(value, str) else ""
    if quant not in TARGETS:
        needs = " (Ollama's q4_K_M and q4_K_S need an Ollama upstream)" if quant in OLLAMA_ONLY else ""
        raise InvalidRequest(f"unsupported quantization type {value}: without an Ollama upstream VeloLLM quantizes "
                             f"to {', '.join(t.lower() for t in TARGETS)}{needs}", param="quantize")
    model = next((layer for layer in reversed(layers) if layer.get("mediaType") == MODEL_MEDIA), None)
    if model is None:
        raise InvalidRequest("quantize needs a model with weights (a GGUF model layer)", param="quantize")
    source = blob_path(root, str(model["digest"]))
    with GGUFFile(source) as f:
        kind = quantization_level(f)
    if kind not in SOURCE_TYPES:
        raise InvalidRequest(f"quantization is only supported for F16, BF16 and F32 models, not {kind}",
                             param="quantize")
    size = source.stat().st_size
    progress = {"status": f"quantizing {kind} model to {quant}", "digest": "0", "total": size}
    ours = [{**progress, "completed": 0}]
    fd, tmp = tempfile.mkstemp(prefix="sha256-", dir=source.parent)
    os.close(fd)
    try:
        try:
            requantize(source, Path(tmp), quant)
        except RequantizeError as exc:
            raise InvalidRequest(str(exc), param="quantize") from None
        ours += [{**progress, "completed": size}, {"status": "verifying conversion"}]
        digest = file_digest(Path(tmp))
        target = blob_path(root, digest)
        new_size = Path(tmp).stat().st_size
        if target.is_file():
            Path(tmp).unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Ollama's order: the quantization and its new layer, then the layers it keeps
    kept = [line for line in lines if line.get("status") != f"using existing layer {model['digest']}"]
    at = next((i for i, line in enumerate(kept) if str(line.get("status")).startswith("using existing layer")),
              len(kept))
    lines[:] = kept[:at] + ours + [{"status": f"creating new layer {digest}"}] + kept[at:]
    new_layer = {**model, "digest": digest, "size": new_size}
    return {**config, "file_type": quant}, [new_layer if layer is model else layer for layer in layers]
