"""The temporary Ollama store the fuzz servers act on (never the user's ~/.ollama: /api/delete is fuzzed),
with sentinel files in the folders around it, so that a path that escapes the store shows up.

Layout: `<base>/around/outer/models` is the store ($OLLAMA_MODELS); `<base>`, `around` and `outer` each hold
a sentinel file; `<base>/pristine` is a copy of the store as built, which `restore` puts back after each
example (a fuzzed delete removes models; the next example should still find them).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.gguf.test_ollama_store import make_store
from tests.proxy.gguf_fixture import write_tiny_llama_gguf

MODELS = ("tiny-a", "tiny-b")  # registry.ollama.ai/library/<name>:latest
FRONT_ONLY = "solo"  # only in the store of the server in front (conftest.py): its fallback paths
# Manifests a partial pull or a hand edit leaves: not JSON, not an object, layers of the wrong shape, a
# missing blob. Every route must answer them with a clear error, never a 500.
BROKEN = {"broken-json": b"{not json", "broken-list": b"[1, 2]",
          "broken-layers": b'{"config": 5, "layers": [1, "x", {"digest": 5}, {"mediaType": 7}]}',
          "missing-blob": json.dumps({"config": {"digest": "sha256:" + "0" * 64}, "layers": [
              {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "1" * 64, "size": 1}]}).encode()}
ESCAPE = Path("/tmp/velollm-fuzz-escape")  # absolute names point here; it must never appear
Snapshot = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns); folders with size -1
BLOB_NAME = re.compile(r"sha256-[0-9a-f]{64}")


@dataclass(frozen=True)
class FuzzStore:
    base: Path
    root: Path  # the store: $OLLAMA_MODELS of every fuzz server
    pristine: Path
    gguf_digest: str  # sha256:<hex> of tiny-a's GGUF blob (a valid `files` value for /api/create)
    other_digests: tuple[str, ...]  # blobs of the store that are no usable GGUF (a truncated one, a template)

    def around(self) -> Snapshot:
        """Every file and folder under `base` except the store itself (pristine and sentinels included)."""
        return {str(p.relative_to(self.base)): _stat(p) for p in self.base.rglob("*")
                if p != self.root and self.root not in p.parents}

    def restore(self) -> None:
        """Puts back every file of the store as built that is missing (manifests and blobs); what the fuzz
        added (copies, created models, uploaded blobs) stays."""
        for src in self.pristine.rglob("*"):
            dst = self.root / src.relative_to(self.pristine)
            if src.is_file() and not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    def reset(self) -> None:
        """The store exactly as built: what the fuzz added goes (a broken manifest copied under a new name,
        created models, uploads), what it changed or removed comes back. Between modules, so that one module's
        leftovers (`/api/copy` of a broken manifest to "nope") do not decide another's answers."""
        for path in sorted(self.root.rglob("*"), reverse=True):  # files before their folders
            twin = self.pristine / path.relative_to(self.root)
            if path.is_file() and not twin.is_file():
                path.unlink()
            elif path.is_dir() and not twin.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        for src in self.pristine.rglob("*"):
            dst = self.root / src.relative_to(self.pristine)
            if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    def check_contained(self, before: Snapshot, where: str) -> None:
        """Nothing around the store changed, nothing escaped to ESCAPE, and the store holds only manifests
        at manifests/<host>/<namespace>/<model>/<tag> and whole blobs (no temporary file left behind)."""
        after = self.around()
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"{where}: changed outside the store: {changed[:10]}"
        assert not ESCAPE.exists(), f"{where}: {ESCAPE} was created"
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).parts
            if path.is_dir():
                assert rel[0] in ("manifests", "blobs") and (rel[0] == "manifests" and len(rel) <= 4
                                                             or len(rel) == 1), f"{where}: folder {rel}"
            elif rel[0] == "blobs":
                assert len(rel) == 2 and BLOB_NAME.fullmatch(rel[1]), f"{where}: stray blob file {rel}"
            else:
                assert rel[0] == "manifests" and len(rel) == 5, f"{where}: stray file {rel}"


def build_store(base: Path, *extra: str) -> FuzzStore:
    """The store with MODELS, BROKEN and `extra` models (tiny GGUFs each)."""
    root = base / "around" / "outer" / "models"
    for seed, name in enumerate((*MODELS, *extra)):
        gguf = write_tiny_llama_gguf(base / f"{name}.gguf", seed=seed)
        make_store(root, gguf, ("registry.ollama.ai", "library", name, "latest"))
    for name, manifest in BROKEN.items():
        (root / "manifests/registry.ollama.ai/library" / name).mkdir(parents=True)
        (root / "manifests/registry.ollama.ai/library" / name / "latest").write_bytes(manifest)
    truncated = (base / f"{MODELS[0]}.gguf").read_bytes()[:300]
    others = (_blob(root, truncated), _blob(root, b"{{ .Prompt }}"), _blob(root, b"GGUF"))
    for folder in (base, base / "around", base / "around" / "outer"):
        (folder / "sentinel").write_text("must survive the fuzz\n")
    shutil.copytree(root, base / "pristine")
    digest = hashlib.sha256((base / f"{MODELS[0]}.gguf").read_bytes()).hexdigest()
    return FuzzStore(base, root, base / "pristine", f"sha256:{digest}", others)


def _blob(root: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return f"sha256:{digest}"


def _stat(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return (-1 if path.is_dir() else st.st_size), st.st_mtime_ns
