"""Compaction items (`POST /v1/responses/compact`): the summary of a conversation's earlier turns, carried by the
client as an opaque `encrypted_content` and expanded again when a later create sends the item back.

The content is self-contained, not a reference to a row: `velollm-compaction:v1.` and the base64url of a JSON
object holding the summary text. So it reads back after a restart, on another replica, and with `store: false`,
and it cannot be evicted from the store under a client that still holds it. It is not encrypted nor signed: the
client sent the conversation it summarises, and anything a forged item could say, a message item can say too; the
version is there so a later format can still read this one. Anything else is a 400 naming the item.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from velollm.context.summary import PREFIX as NOTE  # the summary reads as --context-overflow compress words it
from velollm.errors import InvalidRequest

_PREFIX = "velollm-compaction:v1."


def seal(summary: str) -> str:
    """The `encrypted_content` that carries `summary`."""
    payload = json.dumps({"summary": summary}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def unseal(value: Any, param: str) -> str:
    """The summary an `encrypted_content` carries; a 400 naming `param` when this server did not make it."""
    if isinstance(value, str) and value.startswith(_PREFIX):
        body = value[len(_PREFIX):]
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("summary"), str):
            return payload["summary"]
    raise InvalidRequest(f"Invalid '{param}': the compaction's encrypted content could not be read (it was not made "
                         "by this server's /v1/responses/compact)", param=param)


def compaction_message(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A compaction input item as the chat message the model reads: the summary, as a system message where the
    item stands (after the user messages that compact returned, before the turn that continues)."""
    summary = unseal(item.get("encrypted_content"), f"{where}.encrypted_content")
    return {"role": "system", "content": NOTE + summary.strip()}
