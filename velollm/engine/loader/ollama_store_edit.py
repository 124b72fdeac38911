"""Changes to Ollama's on-disk store, made as Ollama makes them (server/images.go, manifest/*.go):

- delete: the manifest goes, the folders it leaves empty are pruned, and each of its blobs that no
  other manifest names is removed;
- copy: the source manifest's bytes written under the new name (no blob is copied: they are shared);
- blobs: written to a temporary `blobs/sha256-<random>` file while hashed, renamed to
  `blobs/sha256-<hex>` only when the sha256 matches the digest it was sent under;
- prune (Ollama's at server start, unless OLLAMA_NOPRUNE): the blobs no manifest names, temporary files of
  writes that died included, removed once they are an hour old, so that a write or a create of another process
  sharing the store (a running Ollama) is never hit; nothing is removed when a manifest cannot be read.

Names are parsed and matched (case-insensitively) as ollama_store reads them; error messages are
Ollama's. The caller serialises nothing: each change is a rename or an unlink, safe to race with readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from velollm.engine.loader.ollama_store import (
    DIGEST,
    NAME_MAX,
    OllamaName,
    blob_path,
    find_manifest,
    manifest_paths,
    parse_name,
)
from velollm.errors import InvalidRequest, ModelNotFound

logger = logging.getLogger(__name__)

PRUNE_AGE_S = 3600.0  # Ollama's grace for a blob no manifest names yet: a create in flight elsewhere
MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
TEMP_PREFIX = ".tmp-"  # write_file's temporary files (a blob's too, in blobs/: pruned when a write died)


def check_digest(digest: str) -> str:
    """`digest` when it is `sha256:<64 hex>` (or `sha256-`), else Ollama's 400."""
    if not DIGEST.fullmatch(digest):
        raise InvalidRequest("invalid digest format", param="digest")
    return digest


def check_storable(name: OllamaName, param: str) -> None:
    """A 400 for a valid name the store cannot hold (a part past the file-name limit), not the file
    system's ENAMETOOLONG as a store failure."""
    if not name.storable():
        raise InvalidRequest(f"name {json.dumps(name.display())} has a part longer than {NAME_MAX} characters, "
                             "which no file system holds as a folder name", param=param)


def manifest_digests(path: Path) -> set[str]:
    """The digests a manifest names (config and layers); none when it cannot be read."""
    return _digests(path) or set()


def _digests(path: Path) -> set[str] | None:
    """The digests a manifest names; None when it cannot be read as one (not JSON, not an object, its layers
    not a list: Ollama's json.Unmarshal into a Manifest fails)."""
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):  # (RecursionError: arrays nested past Python's stack)
        return None
    layers = manifest.get("layers") if isinstance(manifest, dict) else ()
    if not isinstance(layers, list | None):
        return None
    refs = [manifest.get("config"), *(layers or [])]
    return {r["digest"] for r in refs if isinstance(r, dict) and isinstance(r.get("digest"), str)}


def named_blobs(root: Path) -> set[str] | None:
    """The blob file names (`sha256-<hex>`) every manifest of the store names; None when one of them, or a folder
    of manifests, cannot be read (what it names is unknown: nothing may be removed as unused)."""
    names: set[str] = set()
    try:
        paths = manifest_paths(root, strict=True)
    except OSError:
        return None
    for path in paths:
        digests = _digests(path)
        if digests is None:
            if path.exists():
                return None
            continue  # deleted since it was listed
        names |= {digest.replace(":", "-", 1).lower() for digest in digests}
    return names


def prune_blobs(root: Path, min_age_s: float = PRUNE_AGE_S) -> list[Path]:
    """Removes the files under blobs/ that no manifest names (blobs, and the temporary files of writes that died:
    Ollama's and BlobWriter's `sha256-<random>`, write_file's `.tmp-<random>`) and that were last written at least
    `min_age_s` ago; the removed paths. None removed when a manifest cannot be read."""
    folder = root / "blobs"
    named = named_blobs(root) if folder.is_dir() else None
    if named is None:
        return []
    removed: list[Path] = []
    now = time.time()
    for path in sorted(folder.iterdir()):
        if not path.name.startswith(("sha256-", TEMP_PREFIX)) or path.name.lower() in named:
            continue
        try:
            info = path.stat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # (renamed into place or removed meanwhile)
            continue
        except OSError as exc:  # as Ollama's prune: said, and the others still go
            logger.warning("could not prune unused blob %s: %s", path, exc)
    return removed


def remove_unnamed(root: Path, paths: list[Path]) -> None:
    """Removes those of `paths` (blobs a failed create wrote) that no manifest names (one of another process may
    have come to name the same bytes)."""
    named = named_blobs(root) if paths else set()
    for path in paths if named is not None else []:
        if path.name.lower() not in named:
            path.unlink(missing_ok=True)


def manifests(root: Path) -> list[Path]:
    return manifest_paths(root)


def existing(root: Path, name: OllamaName) -> Path | None:
    return find_manifest(root, name) if root.is_dir() else None


def delete_model(name: str, root: Path) -> Path:
    """Removes `name` from the store (Ollama's DeleteHandler); the removed manifest's path. 400 for an
    invalid name, 404 `model 'NAME' not found`."""
    parsed = parse_name(name)
    if parsed is None:
        raise InvalidRequest(f"name {json.dumps(name)} is invalid", param="model")
    path = existing(root, parsed)
    if path is None:
        raise ModelNotFound(f"model '{name}' not found")
    digests = manifest_digests(path)
    try:
        path.unlink()
    except FileNotFoundError:  # a delete at the same time was first
        raise ModelNotFound(f"model '{name}' not found") from None
    _prune(path.parent, root / "manifests")
    still_used: set[str] = set().union(*(manifest_digests(p) for p in manifests(root)))
    for digest in digests - still_used:
        if DIGEST.fullmatch(digest):  # a manifest is a file on disk: never unlink what it names blindly
            blob_path(root, digest).unlink(missing_ok=True)
    return path


def copy_model(source: str, destination: str, root: Path) -> Path:
    """Writes the manifest of `source` under `destination` (Ollama's CopyHandler: 400 for an invalid name,
    404 `model "SRC" not found`); a destination that exists (in any case) is replaced. The new path."""
    src = parse_name(source)
    if src is None:
        raise InvalidRequest(f"source {json.dumps(source)} is invalid", param="source")
    dst = parse_name(destination)
    if dst is None:
        raise InvalidRequest(f"destination {json.dumps(destination)} is invalid", param="destination")
    check_storable(dst, "destination")
    path = existing(root, src)
    if path is None:
        raise ModelNotFound(f"model {json.dumps(source)} not found")
    target = existing(root, dst) or root.joinpath("manifests", *dst.parts())
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # deleted since it was found
        raise ModelNotFound(f"model {json.dumps(source)} not found") from None
    write_file(target, data)
    return target


def write_file(path: Path, data: bytes, tries: int = 5) -> None:
    """`data` at `path`, whole or not at all (a temporary file beside it, renamed). A delete at the same
    time may prune the folders it made (empty until the rename): they are made again."""
    for _ in range(tries - 1):
        try:
            return _write_file(path, data)
        except (FileNotFoundError, FileExistsError):  # (mkdir: it was there, then it was not)
            continue
    _write_file(path, data)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, read in 8 MiB pieces: the name its blob has in a store."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def has_blob(root: Path, digest: str) -> bool:
    return blob_path(root, check_digest(digest)).is_file()


def _prune(folder: Path, top: Path) -> None:
    """Removes `folder` and its parents up to (not including) `top` while they are empty."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop
            return
        folder = folder.parent


class BlobWriter:
    """One blob being written into the store: `write` each chunk, then `commit` (checks the sha256 and
    renames the file into place) or `abort`. Blocking: call from a worker thread for large chunks."""

    def __init__(self, root: Path, digest: str) -> None:
        self.digest = check_digest(digest)
        self.target = blob_path(root, digest)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="sha256-", dir=self.target.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        """Ollama's 400 `digest mismatch, expected "X", got "Y"` when the bytes are not the digest's."""
        self._file.close()
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            self._tmp.unlink(missing_ok=True)
            raise InvalidRequest(f"digest mismatch, expected {json.dumps(self.digest)}, got {json.dumps(got)}",
                                 param="digest")
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.target)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)
