"""Ollama model names, compared the way Ollama compares them (one rule for the whole server)."""

from __future__ import annotations


def has_tag(name: str) -> bool:
    return ":" in name.rsplit("/", 1)[-1]


def name_key(name: str) -> str:
    """Ollama's comparison key: case-insensitive, and an untagged `m` means `m:latest`."""
    name = str(name).strip().lower()
    return name if has_tag(name) else f"{name}:latest"


def same_model(a: str, b: str) -> bool:
    return name_key(a) == name_key(b)
