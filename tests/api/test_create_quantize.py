"""velollm/api/create_quantize.py on a store laid out as `ollama pull` leaves it, through live_progress as the
server streams it: a failure inside a quantizing thread after the progress began ends the stream with Ollama's
`{"error"}` line, a client that leaves stops the quantization, and neither leaves a temporary blob, a manifest
or a thread behind."""

from __future__ import annotations

import asyncio
import json
import threading

from starlette.responses import StreamingResponse

from tests.gguf.test_ollama_store import make_store
from tests.gguf.tiny_gguf import ArchSpec, bpe_tokenizer, state_dict, write_gguf
from velollm.api.live_progress import live_progress
from velollm.api.local_create import create_model
from velollm.engine.loader import gguf_requantize, kquants


def _stream(body: dict, root) -> list[dict]:
    async def go() -> list[dict]:
        response = await live_progress(lambda emit: asyncio.to_thread(create_model, body, root, emit), lambda: None)
        assert isinstance(response, StreamingResponse)
        return [json.loads(chunk) async for chunk in response.body_iterator]
    return asyncio.run(go())


def test_a_worker_failure_ends_the_stream_and_leaves_nothing(tmp_path, monkeypatch):
    spec, tok = ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    source = write_gguf(tmp_path / "f16.gguf", spec, state_dict(spec, len(tok.tokens), seed=9), tok, "F16")
    root = tmp_path / "models"
    make_store(root, source, ("registry.ollama.ai", "library", "f16", "latest"))
    blobs = sorted(p.name for p in (root / "blobs").iterdir())
    calls = []

    def fail_on_the_sixth(x):
        calls.append(1)
        if len(calls) == 6:
            raise MemoryError("cannot allocate the chunk's buffers")
        return kquants.quantize_q4_k(x)

    monkeypatch.setattr(gguf_requantize, "CHUNK_VALUES", 4096)  # several chunks a tensor, on the pool
    monkeypatch.setitem(gguf_requantize._BLOCKS, "Q4_K", (256, fail_on_the_sixth))
    lines = _stream({"model": "small", "from": "f16", "quantize": "q4_K_M"}, root)
    assert lines[0] == {"status": "quantizing F16 model to Q4_K_M", "digest": "0", "total": source.stat().st_size,
                        "completed": 0}
    assert lines[-1] == {"error": "internal error: cannot allocate the chunk's buffers"}
    assert not any("success" == line.get("status") for line in lines)
    assert sorted(p.name for p in (root / "blobs").iterdir()) == blobs  # the temporary blob is gone
    assert not (root / "manifests/registry.ollama.ai/library/small").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("velollm-quantize")]


def test_the_same_store_quantizes_when_nothing_fails(tmp_path):
    spec, tok = ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    source = write_gguf(tmp_path / "f16.gguf", spec, state_dict(spec, len(tok.tokens), seed=9), tok, "F16")
    root = tmp_path / "models"
    make_store(root, source, ("registry.ollama.ai", "library", "f16", "latest"))
    lines = _stream({"model": "small", "from": "f16", "quantize": "q4_K_M"}, root)
    assert lines[-1] == {"status": "success"}
    assert (root / "manifests/registry.ollama.ai/library/small/latest").is_file()


def test_a_client_that_leaves_stops_the_quantization_and_leaves_nothing(tmp_path, monkeypatch):
    """`ollama create -q` interrupted: the quantization stops at its next progress line (ClientGone in the
    worker), the temporary blob is removed, no manifest is written, and the threads end."""
    import time

    from velollm.api.live_progress import ClientGone

    spec, tok = ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    source = write_gguf(tmp_path / "f16.gguf", spec, state_dict(spec, len(tok.tokens), seed=9), tok, "F16")
    root = tmp_path / "models"
    make_store(root, source, ("registry.ollama.ai", "library", "f16", "latest"))
    blobs = sorted(p.name for p in (root / "blobs").iterdir())
    calls, outcome, finished = [], [], []

    def slow(x):
        calls.append(1)
        time.sleep(0.01)
        return kquants.quantize_q4_k(x)

    def create(emit):
        try:
            return create_model({"model": "small", "from": "f16", "quantize": "q4_K_M"}, root, emit)
        except BaseException as exc:
            outcome.append(exc)
            raise

    monkeypatch.setattr(gguf_requantize, "CHUNK_VALUES", 4096)
    monkeypatch.setitem(gguf_requantize._BLOCKS, "Q4_K", (256, slow))

    async def go() -> None:
        response = await live_progress(lambda emit: asyncio.to_thread(create, emit), lambda: finished.append(1))
        it = response.body_iterator
        await it.__anext__()
        await it.__anext__()
        await it.aclose()  # the client went away mid-quantization
        for _ in range(500):
            if finished:
                break
            await asyncio.sleep(0.02)

    asyncio.run(go())
    assert finished == [1] and len(outcome) == 1 and isinstance(outcome[0], ClientGone)
    assert 0 < len(calls) < 100  # stopped early: the whole file is 284 Q4_K chunks of 4096 values
    assert sorted(p.name for p in (root / "blobs").iterdir()) == blobs
    assert not (root / "manifests/registry.ollama.ai/library/small").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("velollm-quantize")]


def test_the_new_blob_is_hashed_as_it_is_written_not_read_back(tmp_path, monkeypatch):
    """The blob's name comes from the bytes as they went out: a second read of the file (ollama_store_edit's
    file_digest, gigabytes for a real model) is never made; the name is still the file's sha256."""
    import hashlib

    from velollm.engine.loader import ollama_store_edit

    spec, tok = ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    source = write_gguf(tmp_path / "f16.gguf", spec, state_dict(spec, len(tok.tokens), seed=9), tok, "F16")
    root = tmp_path / "models"
    make_store(root, source, ("registry.ollama.ai", "library", "f16", "latest"))

    def read_back(path):
        raise AssertionError(f"{path} read back to hash it")

    monkeypatch.setattr(ollama_store_edit, "file_digest", read_back)
    for stream in (True, False):
        body = {"model": f"small-{stream}", "from": "f16", "quantize": "q8_0"}
        lines = _stream(body, root) if stream else create_model(body, root)
        assert lines[-1] == {"status": "success"}, lines
        manifest = json.loads((root / f"manifests/registry.ollama.ai/library/small-{stream}/latest").read_text())
        layer = manifest["layers"][0]
        data = (root / "blobs" / layer["digest"].replace(":", "-")).read_bytes()
        assert (layer["digest"], layer["size"]) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
