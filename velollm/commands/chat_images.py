"""Images named in a `velollm run` message, as Ollama's CLI reads them for a vision model
(cmd/interactive.go extractFileData): an existing .jpg/.jpeg/.png/.webp path in the text is read, sent
base64 in the message's `images`, and taken out of the text."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import TextIO

# Ollama's pattern: a path from /, ./ or a drive letter, spaces escaped or not, ending in an image extension
_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|webp)\b")
_MAX_BYTES = 100 * 1024 * 1024  # Ollama's limit per image


def names_image(line: str) -> bool:
    """True when `line`, which starts with "/", starts with an image path rather than a slash command
    (`/home/me/cat.png what is this?`): Ollama sends such a line to a vision model as a message."""
    words = line.split()
    return bool(words) and any(found.startswith(words[0]) for found in _PATH.findall(line))


def extract_images(text: str, err: TextIO) -> tuple[str, list[str]]:
    """(the text without the image paths, the images as base64); a path that does not exist stays text."""
    images = []
    for found in _PATH.findall(text):
        path = Path(found.replace("\\ ", " ").replace("%20", " "))
        if not path.is_file():
            continue
        if path.stat().st_size > _MAX_BYTES:
            err.write(f"Skipped image '{path}': file size exceeds maximum limit (100MB)\n")
            continue
        data = path.read_bytes()
        err.write(f"Added image '{path}'\n")
        for spelling in (f"'{path}'", f"'{found}'", found):
            text = text.replace(spelling, "")
        images.append(base64.b64encode(data).decode())
    return text.strip(), images
