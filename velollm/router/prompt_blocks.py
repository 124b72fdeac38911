"""PromptBlocks: a request's prompt as chained hashes of fixed-size blocks of its text (UTF-8 bytes).

The text is the messages (role, content, tool calls) or the prompt (with its system prompt), in order,
so two chats that share their first turns share their first blocks. Block i's hash covers blocks
0..i (chained, as the engine's prefix cache hashes token blocks), so equal hashes mean equal prefixes.
Only full blocks are hashed: a prompt shorter than one block has no prefix to route by.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

_MESSAGE_END = "\x1e"


@dataclass(frozen=True)
class PromptBlocks:
    hashes: tuple[int, ...] = ()

    @classmethod
    def of(cls, body: dict[str, Any], block_bytes: int) -> PromptBlocks:
        return cls(block_hashes(prompt_text(body), block_bytes))


NO_BLOCKS = PromptBlocks()


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request's prompt is made of, for either API: chat messages, or system + prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "".join(_message(m) for m in messages if isinstance(m, dict))
    if isinstance(body.get("input"), (list, str)) and "prompt" not in body:  # /v1/responses
        items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        head = _message({"role": "system", "content": body.get("instructions")}) if body.get("instructions") else ""
        return head + "".join(_message(m) for m in items if isinstance(m, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = json.dumps(prompt)
    system = body.get("system")
    return (_message({"role": "system", "content": system}) if system else "") + (str(prompt) if prompt else "")


def _message(m: dict[str, Any]) -> str:
    content = m.get("content")
    if not isinstance(content, str):
        content = json.dumps(content, sort_keys=True, separators=(",", ":")) if content is not None else ""
    calls = m.get("tool_calls")
    extra = json.dumps(calls, sort_keys=True, separators=(",", ":")) if calls else ""
    return f"{m.get('role', '')}\x1f{content}{extra}{_MESSAGE_END}"


def block_hashes(text: str, block_bytes: int) -> tuple[int, ...]:
    data = text.encode("utf-8", "surrogatepass")
    size = block_bytes
    out: list[int] = []
    previous = b""
    for start in range(0, len(data) - size + 1, size):
        digest = hashlib.blake2b(previous + data[start:start + size], digest_size=8).digest()
        out.append(int.from_bytes(digest, "little"))
        previous = digest
    return tuple(out)
