"""HEAD|POST /api/blobs/<digest>: the blobs `ollama create` uploads before it names them in /api/create.

The digest is checked first (`sha256:<64 hex>`, else Ollama's 400 `invalid digest format`), before a byte
of the body is read. With an upstream that takes model management, the request goes there
(velollm/proxy/model_admin.py streams the body through); without one, into the Ollama store this server
loads models from: HEAD answers 200 when the blob is there, else 404; POST streams the body to a temporary
file while hashing it, in chunks (never the whole body in memory), and renames it into place when its sha256
is the digest (201), else 400 `digest mismatch`; a blob already there is 200 (the body read and dropped).

The route is exempt from the JSON body limit (`--max-request-bytes`, middleware.py): a GGUF is gigabytes.
What guards it instead: the digest check, the API key and origin checks as everywhere, a declared
Content-Length larger than the store's free disk space refused before reading (507), a client silent for
IDLE_S cut off (408), and a partial file never visible under a blob's name.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from velollm.api.handler import STATUS_CLIENT_CLOSED, AppState, Call, endpoint
from velollm.api.model_admin import upstream_answer
from velollm.proxy.model_admin import ClientStalled, client_body, drain
from velollm.wire.errors import APIError

if TYPE_CHECKING:
    from velollm.engine.loader.ollama_store_edit import BlobWriter

IDLE_S = 120.0  # the longest a client may send nothing in the middle of a blob
WRITE_BYTES = 4 << 20  # written to disk (in a worker thread) in batches of this much


@endpoint("/api/blobs")
async def blob(request: Request, state: AppState, call: Call) -> Response:
    from velollm.engine.loader import ollama_store_edit as store_edit  # pure Python: no torch, even --proxy-only

    digest = store_edit.check_digest(request.path_params["digest"])
    answer = await upstream_answer(state, request, None)
    if answer is not None:
        return answer
    root = state.models.store_root()
    if root is None:
        raise APIError(501, "blobs: this server has no Ollama upstream (--upstream or $OLLAMA_HOST, or an Ollama "
                            "backend in --config) and keeps no Ollama store of its own under --proxy-only")
    if request.method == "HEAD":
        return Response(status_code=200 if await asyncio.to_thread(store_edit.has_blob, root, digest) else 404)
    if await asyncio.to_thread(store_edit.has_blob, root, digest):
        await drain(request, IDLE_S)
        return Response(status_code=200)
    _check_room(request, root)
    return await _receive(request, root, digest)


def _check_room(request: Request, root: Path) -> None:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return
    folder = root if root.is_dir() else root.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if int(declared) > free:
        raise APIError(507, f"blob of {int(declared)} bytes does not fit: {free} bytes free in {root}")


async def _receive(request: Request, root: Path, digest: str) -> Response:
    from velollm.engine.loader.ollama_store_edit import BlobWriter

    try:
        writer = await asyncio.to_thread(BlobWriter, root, digest)
    except OSError as exc:  # a store this server may read but not write
        raise APIError(500, f"cannot write blobs into {root}: {exc.strerror or exc}") from None
    pending: list[bytes] = []
    size = 0
    try:
        async for chunk in client_body(request, IDLE_S):
            pending.append(chunk)
            size += len(chunk)
            if size >= WRITE_BYTES:
                await asyncio.to_thread(_write, writer, pending)
                pending, size = [], 0
        await asyncio.to_thread(_write, writer, pending)
        await asyncio.to_thread(writer.commit)
    except ClientDisconnect:
        await asyncio.to_thread(writer.abort)
        return Response(status_code=STATUS_CLIENT_CLOSED)
    except ClientStalled as exc:
        await asyncio.to_thread(writer.abort)
        raise APIError(408, str(exc)) from None
    except OSError as exc:  # the disk filled up (a body without Content-Length), or the store went away
        await asyncio.to_thread(writer.abort)
        status = 507 if exc.errno == errno.ENOSPC else 500
        raise APIError(status, f"writing blob {digest} into {root} failed: {exc.strerror or exc}") from None
    except BaseException:
        await asyncio.shield(asyncio.to_thread(writer.abort))
        raise
    return Response(status_code=201)


def _write(writer: BlobWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)


def routes() -> list[Route]:
    return [Route("/api/blobs/{digest}", blob, methods=["HEAD", "POST"])]
