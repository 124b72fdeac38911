"""Turns: a chat's messages in the units truncation may drop, oldest first.

A unit is one user turn: the user message and everything after it up to the next user message
(assistant answers, tool calls and their tool results), so dropping a unit never splits a tool call
from its result and never breaks the user/assistant alternation templates check. System (and developer)
messages are never dropped, wherever they sit, nor is anything from the last user message on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KEPT_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Turns:
    messages: tuple[Mapping[str, Any], ...]
    units: tuple[tuple[int, ...], ...]  # indices of droppable messages, one tuple per unit, oldest first

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]]) -> Turns:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
        units: list[list[int]] = []
        for i in range(last_user):
            role = messages[i].get("role")
            if role in KEPT_ROLES:
                continue
            if role == "user" or not units:
                units.append([])
            units[-1].append(i)
        return cls(tuple(messages), tuple(tuple(u) for u in units))

    def without(self, num_units: int) -> tuple[list[Mapping[str, Any]], list[int]]:
        """The messages with the `num_units` oldest units dropped, and the dropped indices."""
        dropped = [i for unit in self.units[:num_units] for i in unit]
        gone = set(dropped)
        return [m for i, m in enumerate(self.messages) if i not in gone], dropped
