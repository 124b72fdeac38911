"""A model specifier as a filesystem path, `~` expanded."""

from __future__ import annotations

from pathlib import Path


def user_path(spec: str) -> Path:
    """`spec` with a leading `~` / `~user` expanded. Where that cannot be done (`~0`: no such user, or no
    home directory) the path stays as written: it then names nothing on disk, which callers report as a
    model not found, where Path.expanduser would raise RuntimeError (a 500 on a server)."""
    try:
        return Path(spec).expanduser()
    except RuntimeError:
        return Path(spec)
