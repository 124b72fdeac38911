"""One `velollm run` conversation: messages, system prompt, options, and Ollama's slash commands."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TextIO

from velollm.commands.chat_render import AnswerWriter, timings
from velollm.commands.client import ServerClient, ServerError
from velollm.commands.show import model_section

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message."""

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter (e.g. /set parameter temperature 0.2)
  /set system <string>   Set system message
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking"""


def parse_value(text: str) -> Any:
    """A parameter value as Ollama types it: int, float, bool, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def read_message(read_line: Callable[[str], str]) -> str:
    """One message: a line, or everything between \"\"\" markers (Ollama's multi-line input).
    Raises EOFError at the end of input."""
    line = read_line(">>> ")
    if not line.lstrip().startswith('"""'):
        return line
    text = line.lstrip()[3:]
    if text.rstrip().endswith('"""') and text.strip() != "":
        return text.rstrip()[:-3]
    lines = [text] if text else []
    while True:
        line = read_line("... ")
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n")
        lines.append(line)


class ChatSession:
    def __init__(self, client: ServerClient, model: str, out: TextIO, *, color: bool,
                 options: dict[str, Any] | None = None, err: TextIO | None = None) -> None:
        self.client = client
        self.model = model
        self.out = out
        self.err = err or out  # where --verbose timings go: stderr, as Ollama writes them
        self.writer = AnswerWriter(out, color=color)
        self.messages: list[dict[str, Any]] = []
        self.options: dict[str, Any] = dict(options or {})
        self.system: str | None = None
        self.verbose = False
        self.keep_alive: str | None = None
        self.show = client.post("/api/show", {"model": model})
        self.think: bool | None = True if "thinking" in (self.show.get("capabilities") or []) else None

    def load(self) -> None:
        """What `ollama run` does first: an empty chat, which loads the model (done_reason "load")."""
        self.client.post("/api/chat", {"model": self.model, "messages": [], "stream": False, **self._keep_alive()})

    def _keep_alive(self) -> dict[str, Any]:
        return {"keep_alive": self.keep_alive} if self.keep_alive is not None else {}

    def ask(self, text: str) -> str:
        """Send `text` as the next user message and stream the answer; the exchange joins the history."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True, "options": self.options,
                                **self._keep_alive()}
        if self.think is not None:
            body["think"] = self.think
        content, thinking, final = self.writer.write(self.client.stream("/api/chat", body))
        self.messages.append({"role": "user", "content": text})
        self.messages.append({"role": "assistant", "content": content, **({"thinking": thinking} if thinking else {})})
        if self.verbose:
            self.err.write(timings(final) + "\n")
            self.err.flush()
        return content

    def command(self, line: str) -> bool:
        """Run a slash command; False when the session should end."""
        words = line.split(None, 2)
        head = words[0].lower()
        if head in ("/bye", "/exit"):
            return False
        if head in ("/?", "/help"):
            self._say((SET_HELP if len(words) > 1 and words[1] == "set" else HELP) + "\n")
        elif head == "/clear":
            self.messages.clear()
            self._say("Cleared session context\n")
        elif head == "/set":
            self._set(words[1:])
        elif head == "/show":
            self._show(words[1] if len(words) > 1 else "")
        else:
            self._say(f"Unknown command '{words[0]}'. Type /? for help\n")
        return True

    def _set(self, args: list[str]) -> None:
        what = args[0].lower() if args else ""
        rest = args[1] if len(args) > 1 else ""
        if what == "parameter":
            parts = shlex.split(rest) if rest else []
            if len(parts) < 2:
                self._say("Usage: /set parameter <name> <value>\n")
                return
            name, values = parts[0], parts[1:]
            self.options[name] = values if name == "stop" else parse_value(" ".join(values))
            self._say(f"Set parameter '{name}' to '{', '.join(values)}'\n")
        elif what == "system":
            self.system = rest.strip().strip('"') or None
            self._say("Set system message.\n")
        elif what in ("verbose", "quiet"):
            self.verbose = what == "verbose"
            self._say(f"Set '{what}' mode.\n")
        elif what in ("think", "nothink"):
            self.think = what == "think"
            self._say(f"Set '{what}' mode.\n")
        else:
            self._say(SET_HELP + "\n")

    def _show(self, what: str) -> None:
        show = self.show
        if what == "info":
            rows = model_section(show) + [("capabilities", ", ".join(show.get("capabilities") or []))]
            width = max(len(k) for k, _ in rows)
            self._say("  Model\n" + "".join(f"    {k:<{width}}    {v}\n" for k, v in rows))
        elif what == "parameters":
            self._say((show.get("parameters") or "No parameters were specified for this model.") + "\n")
            if self.options:
                self._say("User defined parameters:\n" + "".join(f"{k:<30} {v}\n" for k, v in self.options.items()))
        elif what in ("system", "template", "license", "modelfile"):
            value = self.system if what == "system" and self.system else show.get(what)
            self._say((value or f"No {what} was specified for this model.") + "\n")
        else:
            self._say("Usage: /show info|parameters|system|template|license|modelfile\n")

    def _say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def run_interactive(session: ChatSession, read_line: Callable[[str], str]) -> int:
    while True:
        try:
            line = read_message(read_line)
        except EOFError:
            session.out.write("\n")
            return 0
        except KeyboardInterrupt:  # Ctrl-C drops the line being typed, as Ollama does
            session.out.write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        if not line.strip():
            continue
        if line.lstrip().startswith("/"):
            if not session.command(line.strip()):
                return 0
            continue
        try:
            session.ask(line)
        except KeyboardInterrupt:  # stops the answer; closing the stream makes the server abort it
            session.out.write("\n")
        except ServerError as exc:
            session.out.write(f"Error: {exc}\n")
