"""Offline lookup of a Hugging Face repo id in the hub cache (`models--org--name/snapshots/<sha>`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def hub_dir(env: Mapping[str, str] | None = None) -> Path:
    """$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's order)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def is_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.fullmatch(spec.split("@", 1)[0]))


def snapshot_folder(spec: str, hub: Path | None = None) -> Path | None:
    """The snapshot folder of `org/name[@revision]`: refs/<revision or main>, else the only snapshot."""
    repo, _, revision = spec.partition("@")
    if not is_repo_id(spec):
        return None
    if revision and (revision.startswith("/") or any(part in ("", ".", "..") for part in revision.split("/"))):
        return None  # a revision names a ref or a commit, never a way out of the repo's folder
    root = (hub_dir() if hub is None else hub) / ("models--" + repo.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / (revision or "main")
    if ref.is_file():
        folder = snapshots / ref.read_text().strip()
        return folder if folder.is_dir() else None
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return candidates[0] if len(candidates) == 1 and not revision else None


def list_repos(hub: Path | None = None) -> list[str]:
    """Repo ids with a usable snapshot in the hub cache (`models--org--name` -> "org/name"), sorted."""
    root = hub_dir() if hub is None else hub
    if not root.is_dir():
        return []
    repos = (p.name.removeprefix("models--").replace("--", "/", 1) for p in root.glob("models--*--*"))
    return sorted(r for r in repos if snapshot_folder(r, root) is not None)
