"""The CLI's argument parser, failing as Ollama's (cobra) CLI fails: `Error: <message>` on stderr, exit status 1,
no usage dump. Scripts written against `ollama` test for status 1; argparse's own is 2 with its usage first."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import NoReturn


class CliParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose usage errors read as cobra's; its subparsers are of this class too
    (add_subparsers makes them of the parent's type). `--help` still prints and exits 0."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"Error: {message}\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # an unknown subcommand: cobra's words (`unknown command "lst" for "ollama"`, then its suggestions), not
        # argparse's list of every choice
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            names = [name for name in action.choices if name not in _aliases(action)]
            raise argparse.ArgumentError(None, f'unknown command "{value}" for "{self.prog}"'
                                               + _did_you_mean(str(value), names))
        super()._check_value(action, value)


def unknown_flag(word: str) -> str:
    """cobra's message for a flag no command defines: `unknown flag: --foo`, `unknown shorthand flag: 'x' in -x`."""
    if word.startswith("--"):
        return f"unknown flag: {word.split('=', 1)[0]}"
    return f"unknown shorthand flag: {word[1:2]!r} in {word}"


def _aliases(action: argparse._SubParsersAction) -> set[str]:
    """The names that are aliases (`ls` for `list`): cobra suggests a command by its name only."""
    seen: dict[int, str] = {}
    aliases = set()
    for name, parser in action.choices.items():
        if id(parser) in seen:
            aliases.add(name)
        else:
            seen[id(parser)] = name
    return aliases


def _did_you_mean(word: str, names: Iterable[str]) -> str:
    """cobra's findSuggestions: the names at most 2 edits away (case ignored) or that start with the word."""
    close = [n for n in names if _distance(word.lower(), n.lower()) <= 2 or n.lower().startswith(word.lower())]
    return "\n\nDid you mean this?\n" + "".join(f"\t{n}\n" for n in close) if close else ""


def _distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
