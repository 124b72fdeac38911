"""`velollm run MODEL [PROMPT]`: chat with a model in the terminal, as `ollama run` does.

Talks to the server at $VELOLLM_HOST (default http://127.0.0.1:8000); when none answers, runs the
model in this process. With PROMPT, or with text piped on stdin, prints one answer and exits.
Interactive: multi-line input between \"\"\", history with the arrow keys, /set, /show, /clear, /bye.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import ClassVar

from velollm.commands.engine_options import add_engine_arguments, engine_flags


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="chat with a model in the terminal", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("prompt", nargs="*", default=[], help="answer this and exit (stdin, when piped, comes first)")
    parser.add_argument("--verbose", action="store_true", help="print timings after each answer")
    parser.add_argument("--think", action=_ThinkFlag, nargs="?", default=None, metavar="true|false|LEVEL",
                        help="ask a thinking model to think, or not (--think=false), or how much (--think=high); "
                             "default: when the model can")
    parser.add_argument("--no-think", dest="think", action="store_const", const=False, help="--think=false")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE", type=_name_value,
                        help="a model option for every request, as /set parameter sets it (e.g. num_predict=64)")
    parser.add_argument("--keepalive", default=None, help="how long the model stays loaded (e.g. 10m)")
    parser.add_argument("--format", choices=["json"], default=None, help="response format (as /set format json)")
    parser.add_argument("--hidethinking", action="store_true", help="hide the thinking of a thinking model")
    parser.add_argument("--insecure", action="store_true", help="use an insecure registry when pulling a missing model")
    parser.add_argument("--nowordwrap", action="store_true",
                        help="don't wrap words to the next line automatically (wrapping is only on a terminal)")
    add_engine_arguments(parser.add_argument_group(
        "engine (when no server answers and the model runs in this process; a server keeps its own)"))
    parser.set_defaults(run=run, words="prompt")  # words after the options are the prompt's too


def _name_value(text: str) -> str:
    """An --option word: NAME=VALUE, refused as a usage error otherwise."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, not {text!r}")
    return text


def normalize_argv(args: list[str]) -> list[str]:
    """The words after `run`, before parsing: a bare `--think` is `--think=true`, so it never takes the word
    after it (the model or the prompt: `velollm run --think M`, `velollm run M --think why...`), as cobra
    reads Ollama's flag; `--think=VALUE` gives a value."""
    return ["--think=true" if a == "--think" else a for a in args]


class _ThinkFlag(argparse.Action):
    """Ollama's `--think=true|false|low|medium|high|max`."""

    VALUES: ClassVar[dict[str, bool | str]] = {"true": True, "false": False, "low": "low", "medium": "medium", "high": "high", "max": "max"}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: object,
                 option_string: str | None = None) -> None:
        think = self.VALUES.get(str(value).lower()) if value is not None else True
        if think is None:
            parser.error(f"invalid think value {value!r}: true, false, low, medium, high or max")
        setattr(namespace, self.dest, think)


def _history_file() -> Path:
    return Path(os.environ.get("HOME") or Path.home()) / ".velollm" / "history"


def _line_reader():  # a callable like input
    """input() with readline: arrow keys edit and recall history, kept in ~/.velollm/history (unless
    $OLLAMA_NOHISTORY is set, as Ollama's; `/set nohistory` stops it for the session)."""
    try:
        import readline
    except ImportError:  # not on this platform: plain input
        return input
    import atexit

    if os.environ.get("OLLAMA_NOHISTORY", "").strip().strip("'\"") not in ("", "0", "false"):
        readline.set_auto_history(False)
        return input

    path = _history_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    atexit.register(readline.write_history_file, path)
    return input


def _connect(model: str, err, serve_args: list[str]):
    """(client, local server or None): the server at $VELOLLM_HOST, else one started in this process with
    `serve_args` (the engine flags; a running server keeps its own settings, said on `err`)."""
    from velollm.commands.client import ServerClient, server_url
    from velollm.commands.local_server import LocalServer, load_progress_bar

    url = server_url(os.environ)
    client = ServerClient(url, api_key=os.environ.get("VELOLLM_API_KEY"))
    if client.answers():
        if serve_args:
            print(f"{' '.join(serve_args)}: not applied, the server at {url} runs with its own settings", file=err)
        return client, None
    client.close()
    print(f"no server answers at {url}: running {model} in this process", file=err)
    local = LocalServer(model, serve_args)
    with load_progress_bar():
        url = local.start()
    return ServerClient(url), local


def _load(session, err) -> None:
    """Load the model, with a spinner on a terminal (a server's own loading progress is in its log; a
    server that `run` started in this process draws it as a bar)."""
    if not err.isatty():
        session.load()
        return
    from rich.console import Console

    with Console(stderr=True).status(f"loading {session.model}...", spinner="dots"):
        session.load()


def _session(client, model: str, options: dict, insecure: bool = False):
    """The chat with `model`; one the server does not have is pulled first (through the server's Ollama
    upstream, with its progress), as `ollama run` pulls a missing model."""
    from velollm.commands import pull
    from velollm.commands.chat_session import ChatSession
    from velollm.commands.client import ServerError

    def start() -> ChatSession:
        return ChatSession(client, model, sys.stdout, color=sys.stdout.isatty(), options=options, err=sys.stderr)

    try:
        return start()
    except ServerError as exc:
        if "not found" not in str(exc):
            raise
        missing = exc
    try:
        pull.run(argparse.Namespace(model=model, insecure=insecure), client)
    except ServerError as exc:
        raise ServerError(f"{missing}; pulling it failed: {exc}") from exc
    return start()


def run(args: argparse.Namespace) -> int:
    import logging

    from velollm.commands.chat_session import parse_value, run_interactive
    from velollm.commands.client import ServerError

    logging.getLogger().setLevel(logging.WARNING)  # the chat, not the log of a server in this process, owns the terminal
    # Ollama's prompt (the same command, the same greedy answer): what stdin holds, when piped, as it is, then
    # the words, all joined by spaces (`cat notes.txt | velollm run m summarize`). An empty stdin (</dev/null,
    # a script's) adds nothing; Ollama's join would start the prompt with a space
    piped = "" if sys.stdin.isatty() else sys.stdin.read()
    prompt = " ".join(([piped] if piped else []) + args.prompt)
    options = {k: parse_value(v) for k, _, v in (o.partition("=") for o in args.option)}
    local = None
    try:
        client, local = _connect(args.model, sys.stderr, engine_flags(args))
        with client:
            session = _session(client, args.model, options, args.insecure)
            session.verbose = args.verbose
            session.format = args.format
            session.writer.show_thinking = not args.hidethinking
            session.writer.word_wrap = not args.nowordwrap
            if args.think is not None:
                session.think = args.think
            if args.keepalive is not None:
                session.keep_alive = args.keepalive
            _load(session, sys.stderr)
            # no chat without a terminal on both ends: with stdout sent to a file or a pipe, Ollama's run is quiet
            # (it loads the model and answers the prompt, if any, and no more)
            if prompt or not sys.stdin.isatty() or not sys.stdout.isatty():
                if prompt:
                    session.ask(prompt)
                return 0
            return run_interactive(session, _line_reader())
    except (ServerError, RuntimeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if local is not None:
            local.stop()
