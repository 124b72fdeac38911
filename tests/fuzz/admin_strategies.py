"""Hypothesis strategies for Ollama's model-management routes: DELETE /api/delete, POST /api/copy,
/api/create, /api/push and HEAD|POST /api/blobs/<digest>.

Bodies are shaped like what `ollama rm / cp / create / push` send, with names and digests drawn from the
fuzz store's models most of the time and otherwise hostile: path traversal (`../../x`, `a/../../b`, the
store's sentinels), absolute paths, NUL bytes, names past Ollama's length limits, look-alike Unicode,
digests of the wrong form; `from` / `files` / `parameters` / `messages` / `template` of wrong types, and
(through `strategies.body`) any field hostile or nested 100,000 levels deep.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.store import BROKEN, ESCAPE, FRONT_ONLY, MODELS, FuzzStore
from tests.fuzz.strategies import (
    EMBEDDER,
    MODEL,
    _templates,
    body,
    encode,
    field,
    hostile,
)

_TRAVERSAL = ["../../x", "a/../../b", "..", ".", "../../../../sentinel", "../../../around/sentinel",
              "registry.ollama.ai/../../sentinel", "tiny-a:../../../sentinel", "a:..", "..:..", "x/..:latest",
              "http://../../x", "~/x", "\\..\\..\\x", "C:\\x", "tiny-a/", "/tiny-a", "tiny-a\x00", "x\x00/../y",
              "tiny-a:latest/../../x", "manifests/registry.ollama.ai/library/tiny-a/latest", "blobs/sha256-x",
              "/etc/passwd", str(ESCAPE / "x"), "ｔｉｎｙ-a", "tіny-a", "модель:тег", "a" * 80, "a" * 81,
              "h" * 300 + "/ns/m", "h" * 350 + "/n" + "s" * 79 + "/" + "m" * 80 + ":" + "t" * 80, "x" * 10_000,
              "a/b/c/d", " tiny-a ", "tiny-a:latest:latest", "-x", "_x/_y:_z"]


def _names(store: FuzzStore) -> st.SearchStrategy[str]:
    known = [*MODELS, f"{MODELS[0]}:latest", MODELS[1].upper(), f"registry.ollama.ai/library/{MODELS[1]}:latest",
             MODEL, EMBEDDER, "new-model", "ns/copy:v1", "host.example:5000/ns/m:t", "nope", FRONT_ONLY, *BROKEN]
    outside = [str(store.base / "sentinel"), str(store.root), str(store.root / ".." / "sentinel"),
               str(store.pristine / "manifests")]
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(known),
                     st.sampled_from([*_TRAVERSAL, *outside]), st.text(max_size=20))


def _digests(store: FuzzStore) -> st.SearchStrategy[str]:
    hex64 = st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
    return st.one_of(
        st.just(store.gguf_digest), st.sampled_from(store.other_digests), hex64.map(lambda h: f"sha256:{h}"), hex64.map(lambda h: f"sha256-{h}"),
        hex64.map(lambda h: f"sha256:{h.upper()}"), hex64.map(lambda h: f"sha256:{h[:63]}"),
        hex64.map(lambda h: f"sha256:{h}0"), hex64.map(lambda h: f"sha512:{h}"), hex64.map(lambda h: f"sha256:{h}\n"),
        st.sampled_from(["", "sha256:", "sha256:" + "g" * 64, "sha256:" + "٠" * 64, "sha256:../../../sentinel",
                         "../../sentinel", "sha256:" + "0" * 64 + "/../../x", "sha256-" + "0" * 62 + "..",
                         "sha256:\x00" + "0" * 63]),
        st.text(max_size=20))


def admin_routes(store: FuzzStore) -> dict[str, st.SearchStrategy[Any]]:
    """route -> strategy of request bodies (the four JSON routes)."""
    names = _names(store)
    digests = _digests(store)
    files = st.one_of(st.dictionaries(st.sampled_from(["model.gguf", "../../x.gguf", "/etc/passwd", "a\x00b", ""]),
                                      digests, min_size=1, max_size=2),
                      st.just({"model.gguf": store.gguf_digest}), hostile())
    parameters = st.dictionaries(st.sampled_from(["temperature", "stop", "num_ctx", "seed", "../x", ""]),
                                 field(st.one_of(st.floats(), st.integers(), st.text(max_size=5),
                                                 st.lists(st.text(max_size=3), max_size=2))), max_size=3)
    messages = st.lists(st.fixed_dictionaries({"role": field(st.sampled_from(["user", "assistant", "system"])),
                                               "content": field(st.text(max_size=10))}), max_size=2)
    common = {"stream": st.booleans(), "insecure": st.booleans()}
    store_models = st.sampled_from([*MODELS, f"{MODELS[1]}:latest", MODELS[0].upper(), FRONT_ONLY, *BROKEN])
    new_names = st.sampled_from(["new-model", "ns/created:v1", "host.example:5000/ns/m:t", MODELS[1]])
    plain = {"parameters": parameters, "messages": messages, "template": _templates, "system": st.text(max_size=20),
             "license": st.text(max_size=10), "stream": st.booleans()}
    layers = {"parameters": field(parameters), "messages": field(messages), "template": field(_templates),
              "system": field(st.text(max_size=20)),
              "license": field(st.one_of(st.text(max_size=10), st.lists(st.text(max_size=5), max_size=2))), **common}
    rare = {"quantize": st.sampled_from(["q4_K_M", "q8_0", "Q8_0", "", None]), "adapters": st.just({})}
    return {
        "/api/delete": body({"model": names}, {"name": names, **common}),
        "/api/copy": body({"source": names, "destination": names}, {"stream": st.booleans()}),
        "/api/create": st.one_of(  # from a store model, from an uploaded GGUF, or anything
            body({"model": st.one_of(new_names, names), "from": st.one_of(store_models, store_models, names)}, plain),
            body({"model": names, "from": field(names)}, layers), body({"model": names, "files": files}, layers),
            body({"model": names}, {"from": names, "files": files, **layers, **rare})),
        "/api/push": body({"model": names}, common),
    }


@dataclass(frozen=True)
class BlobRequest:
    """One HEAD or POST /api/blobs/<digest>: the path as sent (quoted or not) and the body."""

    path: str
    content: bytes


@st.composite
def blob_requests(draw: st.DrawFn, store: FuzzStore) -> BlobRequest:
    """A digest of any form in the path (percent-quoted, or raw so that `/` and `..` reach the router), and a
    body that matches it, matches another digest, or is the GGUF the store already holds."""
    content = draw(st.one_of(st.binary(max_size=64), st.just(b""), hostile().map(encode)))
    matching = "sha256:" + hashlib.sha256(content).hexdigest()
    digest = draw(st.one_of(st.just(matching), st.just(matching), _digests(store)))
    if digest == store.gguf_digest and draw(st.booleans()):
        content = (store.base / f"{MODELS[0]}.gguf").read_bytes()
    safe = draw(st.sampled_from(["", "", ":/"]))
    quoted = quote(digest, safe=safe, errors="surrogatepass")
    return BlobRequest(f"/api/blobs/{quoted}", content)
