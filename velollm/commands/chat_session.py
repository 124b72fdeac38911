"""One `velollm run` conversation: messages, system prompt, options, and Ollama's slash commands."""

from __future__ import annotations

from typing import Any, TextIO

from velollm.commands.chat_commands import known, run_command
from velollm.commands.chat_images import extract_images, names_image
from velollm.commands.chat_input import ReadLine, read_message, typed_text
from velollm.commands.chat_render import AnswerWriter, timings
from velollm.commands.client import ServerClient, ServerError


def parse_value(text: str) -> Any:
    """A parameter value as Ollama types it: int, float, bool, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


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
        self.format: str | None = None  # /set format json
        self.read_line: ReadLine | None = None  # the terminal, once the interactive loop runs
        self.show = client.post("/api/show", {"model": model})
        self.think: bool | str | None = self._default_think()

    def _default_think(self) -> bool | None:
        """A thinking model thinks unless told otherwise (Ollama's default); others are not asked."""
        return True if "thinking" in (self.show.get("capabilities") or []) else None

    def load(self) -> None:
        """What `ollama run` does first: an empty chat, which loads the model (done_reason "load")."""
        self.client.post("/api/chat", {"model": self.model, "messages": [], "stream": False, **self._keep_alive()})

    def _keep_alive(self) -> dict[str, Any]:
        return {"keep_alive": self.keep_alive} if self.keep_alive is not None else {}

    def is_command(self, line: str) -> bool:
        """A slash command, unless a vision model is asked about an image whose path starts the line (Ollama's
        check in cmd/interactive.go, here after the command names: `/set system ... /x.png` stays a command)."""
        if not line.startswith("/"):  # as typed: " /bye" is a message, as in Ollama
            return False
        if known(line.split()[0]):
            return True
        asks_about_an_image = "vision" in (self.show.get("capabilities") or []) and names_image(line)
        return not asks_about_an_image

    def ask(self, text: str) -> str:
        """Send `text` as the next user message and stream the answer; the exchange joins the history."""
        user: dict[str, Any] = {"role": "user", "content": text}
        if "vision" in (self.show.get("capabilities") or []):  # image paths in the text, as Ollama's CLI reads them
            user["content"], images = extract_images(text, self.err)
            if images:
                user["images"] = images
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        messages.append(user)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True, "options": self.options,
                                **self._keep_alive()}
        if self.think is not None:
            body["think"] = self.think
        if self.format:
            body["format"] = self.format
        self.messages.append(user)  # kept when Ctrl-C stops the answer, as in Ollama
        try:
            content, thinking, final = self.writer.write(self.client.stream("/api/chat", body))
        except ServerError:
            self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": content, **({"thinking": thinking} if thinking else {})})
        if self.verbose:
            self.err.write(timings(final) + "\n")
            self.err.flush()
        return content

    def switch_model(self, model: str) -> None:
        """/load: another model, a fresh conversation; the current one stays when `model` is not found."""
        previous = self.model, self.show
        self.model = model
        try:
            self.show = self.client.post("/api/show", {"model": model})
            self.load()
        except ServerError:
            self.model, self.show = previous
            raise
        self.messages.clear()
        if self.think in (None, True):  # not set by hand: the new model's default
            self.think = self._default_think()

    def save_as(self, name: str) -> None:
        """/save: the session (system message, parameters, messages) as a new model, through /api/create."""
        body: dict[str, Any] = {"model": name, "from": self.model, "stream": False}
        if self.system:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        if self.messages:
            body["messages"] = self.messages
        self.client.post("/api/create", body)

    def command(self, line: str) -> bool:
        """Run a slash command; False when the session should end."""
        return run_command(self, line)

    def say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def usage(self, text: str) -> None:
        """A usage text (/?, a bare /set...) or an error: on stderr, where Ollama's interactive mode writes them."""
        self.err.write(text)
        self.err.flush()


def run_interactive(session: ChatSession, read_line: ReadLine) -> int:
    session.read_line = read_line  # for commands that read on (`/set system """...`)
    for message in session.show.get("messages") or []:  # the model's MESSAGE history, shown as Ollama's run does
        if message.get("role") == "user":
            session.out.write(f">>> {message.get('content', '')}\n")
        elif message.get("role") == "assistant":  # through the writer: word-wrapped as Ollama's displayResponse
            session.writer.show(message.get("content", ""))
            session.out.write("\n\n")
    while True:
        try:
            line = read_message(read_line)
        except EOFError:
            session.out.write("\n")
            return 0
        except KeyboardInterrupt:  # Ctrl-C drops the line being typed; on an empty line, Ollama's hint
            session.out.write("\n" if typed_text() else "\nUse Ctrl + d or /bye to exit.\n")
            continue
        if not line:  # a line of spaces is a message: Ollama sends what was typed
            continue
        if session.is_command(line):
            if not session.command(line):
                return 0
            continue
        try:
            session.ask(line)
        except KeyboardInterrupt:  # stops the answer; closing the stream makes the server abort it
            session.out.write("\n")
        except ServerError as exc:  # Ollama's words and streams: a think refusal on stdout, other errors on stderr
            if "does not support thinking" in str(exc) or "invalid think value" in str(exc):
                session.say(f"error: {exc}\n")
            else:  # (Ollama's session ends there; this one goes on)
                session.usage(f"Error: {exc}\n")
