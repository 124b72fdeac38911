"""`velollm` command line: each subcommand lives in velollm/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from velollm.commands.cli_parser import CliParser, unknown_flag

# subcommand -> module exposing add_parser(subparsers) and run(args) -> int
COMMANDS = {
    "serve": "velollm.commands.serve",
    "generate": "velollm.commands.generate",
    "list": "velollm.commands.list_models",
    "detect": "velollm.commands.detect",
    "benchmark": "velollm.commands.benchmark",
    "optimize": "velollm.commands.optimize",
    "run": "velollm.commands.run",
    "ps": "velollm.commands.ps",
    "stop": "velollm.commands.stop",
    "show": "velollm.commands.show",
    "pull": "velollm.commands.pull",
    "push": "velollm.commands.push",
    "rm": "velollm.commands.rm",
    "cp": "velollm.commands.cp",
    "create": "velollm.commands.create",
    "cache": "velollm.commands.cache",
}


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="velollm", description="vLLM performance with Ollama simplicity.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("-v", "--version", action="store_true", help="show version information (as `ollama -v`)")
    subparsers = parser.add_subparsers(dest="command")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that a subcommand with `words` set (run's prompt) takes the words that follow
    its options too: `velollm run demo --verbose why is the sky blue`, as Ollama's CLI reads it. A flag no
    command knows fails as cobra fails on it (`Error: unknown flag: --foo`, exit status 1)."""
    args, extra = parser.parse_known_args(argv)
    words = getattr(args, "words", None)
    flags = [e for e in extra if e.startswith("-")]
    if flags:
        parser.error(unknown_flag(flags[0]))
    if extra and words is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if words is not None:  # a new list: never the parser's default one, extended
        setattr(args, words, [*getattr(args, words), *extra])
    return args


def _normalized(argv: list[str]) -> list[str]:
    """The subcommand's own rewrite of the words after its name (`normalize_argv`: run's `--think`); cobra's
    `help [COMMAND]` (`ollama help run`) as `COMMAND --help`."""
    if argv[:1] == ["help"]:
        return [*argv[1:2], "--help"]
    for i, word in enumerate(argv):
        if word in COMMANDS:
            normalize = getattr(importlib.import_module(COMMANDS[word]), "normalize_argv", None)
            return argv[:i + 1] + normalize(argv[i + 1:]) if normalize else argv
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, _normalized(list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:  # `velollm -v`; a bare `velollm` prints its usage, as Ollama's root command does
        if args.version:
            from velollm.commands.version import show_version

            return show_version()
        parser.print_help()
        return 0
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
