"""Ollama's slash commands in `velollm run`, with its words (cmd/interactive.go): /set, /show, /load,
/save, /clear, /?, /bye. As there, the usage texts (/?, a bare /set or /show...) and /show info go to stderr,
the other answers to stdout."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from velollm.commands.chat_input import read_block
from velollm.commands.chat_parameters import format_parameter
from velollm.commands.client import ServerError
from velollm.commands.show import describe
from velollm.wire.go_format import go_float, go_value

if TYPE_CHECKING:
    from velollm.commands.chat_session import ChatSession

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""

IMAGES_HELP = "Use /path/to/file to include .jpg, .png, or .webp images.\n"  # for a model that sees images

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""

PARAMETERS_HELP = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter stop <string> <string> ...   Set the stop parameters
"""

SHORTCUTS_HELP = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit (/bye)
"""

_NOTHING = {"license": "No license was specified for this model.",
            "system": "No system message was specified for this model.",
            "template": "No prompt template was specified for this model."}


def known(word: str) -> bool:
    """True for the name of a slash command (`/set`, `/bye`...)."""
    return word.lower() in _COMMANDS or word.lower() in ("/bye", "/exit")


def run_command(session: ChatSession, line: str) -> bool:
    """Run one slash command; False when the session should end."""
    words = line.split()
    head = words[0].lower()
    if head in ("/bye", "/exit"):
        return False
    handler = _COMMANDS.get(head)
    if handler is None:
        session.say(f"Unknown command '{words[0]}'. Type /? for help\n")
    else:
        handler(session, line, words[1:])
    return True


def _help(session: ChatSession, line: str, args: list[str]) -> None:
    if not args:
        images = "vision" in (session.show.get("capabilities") or [])
        session.usage(HELP + (IMAGES_HELP if images else "") + "\n")
        return
    topic = {"set": SET_HELP, "show": SHOW_HELP, "shortcut": SHORTCUTS_HELP, "shortcuts": SHORTCUTS_HELP}
    text = topic.get(args[0].lstrip("/"))
    if text:
        session.usage(text + "\n")


def _list(session: ChatSession, line: str, args: list[str]) -> None:
    """`/list [PREFIX]`: `velollm list`'s table of the server's models (Ollama's interactive mode has it, unlisted)."""
    from velollm.commands.list_models import server_table
    from velollm.commands.text_table import text_table

    try:
        models = session.client.get("/api/tags").get("models") or []
    except ServerError as exc:
        session.usage(f"Error: {exc}\n")
        return
    session.say("\n".join(text_table(server_table(models, args[0] if args else ""))) + "\n")


def _clear(session: ChatSession, line: str, args: list[str]) -> None:
    session.messages.clear()
    session.say("Cleared session context\n")


def _load(session: ChatSession, line: str, args: list[str]) -> None:
    if len(args) != 1:
        session.say("Usage:\n  /load <modelname>\n")
        return
    session.say(f"Loading model '{args[0]}'\n")
    try:
        session.switch_model(args[0])
    except ServerError as exc:
        session.say(f"Couldn't find model '{args[0]}'\n" if "not found" in str(exc) else f"error: {exc}\n")


def _save(session: ChatSession, line: str, args: list[str]) -> None:
    if len(args) != 1:
        session.say("Usage:\n  /save <modelname>\n")
        return
    try:
        session.save_as(args[0])
    except ServerError as exc:  # Ollama's words for errtypes.InvalidModelNameErrMsg
        invalid = "invalid model name" in str(exc)
        session.say(f"error: The model name '{args[0]}' is invalid\n" if invalid else f"error: {exc}\n")
        return
    session.say(f"Created new model '{args[0]}'\n")


def _set(session: ChatSession, line: str, args: list[str]) -> None:
    if not args:
        session.usage(SET_HELP + "\n")
        return
    what = args[0]
    if what == "parameter":
        _set_parameter(session, _words(line.split(None, 2)[2]) if len(args) > 1 else [])
    elif what == "system":
        _set_system(session, line.split(None, 2)[2] if len(args) > 1 else "")
    elif what in ("history", "nohistory"):
        _history(what == "history")  # Ollama says nothing either
    elif what in ("wordwrap", "nowordwrap", "verbose", "quiet"):
        if what in ("verbose", "quiet"):
            session.verbose = what == "verbose"
        else:
            session.writer.word_wrap = what == "wordwrap"
        session.say(f"Set '{what}' mode.\n")
    elif what in ("think", "nothink"):
        level = args[1] if what == "think" and len(args) > 1 else None
        session.think = level or what == "think"
        if "thinking" not in (session.show.get("capabilities") or []):  # Ollama's ensureThinkingSupport
            session.err.write(f'warning: model "{session.model}" does not support thinking output\n')
            session.err.flush()
        session.say(f"Set 'think' mode to '{level}'.\n" if level else f"Set '{what}' mode.\n")
    elif what == "format":
        if len(args) < 2 or args[1] != "json":
            session.say("Invalid or missing format. For 'json' mode use '/set format json'\n")
        else:
            session.format = "json"
            session.say("Set format to 'json' mode.\n")
    elif what == "noformat":
        session.format = None
        session.say("Disabled format.\n")
    else:
        session.say(f"Unknown command '/set {what}'. Type /? for help\n")


def _history(on: bool) -> None:
    """Lines from now on join the history (arrow keys, ~/.velollm/history) or not."""
    try:
        import readline
    except ImportError:  # no readline here: there is no history
        return
    readline.set_auto_history(on)


def _words(text: str) -> list[str]:
    """Shell-like words (`stop "<|eot_id|>" "###"`); a stray quote: plain words."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _set_parameter(session: ChatSession, parts: list[str]) -> None:
    if len(parts) < 2:
        session.usage(PARAMETERS_HELP + "\n")
        return
    name, values = parts[0], parts[1:]
    try:
        session.options[name] = format_parameter(name, values)
    except ValueError as exc:
        session.say(f'Couldn\'t set parameter: "{exc}"\n')
        return
    session.say(f"Set parameter '{name}' to '{', '.join(values)}'\n")


def _set_system(session: ChatSession, text: str) -> None:
    """Ollama's words joined by single spaces (strings.Fields), quotes kept; a \"\"\" block as typed."""
    text = " ".join(text.split())
    if not text:
        session.usage(SET_HELP + "\n")
        return
    if text.startswith('"""'):  # a block, on this line or up to a closing line (Ollama's MultilineSystem)
        if session.read_line is None and not (len(text) >= 6 and text.endswith('"""')):
            session.say("Usage: /set system \"\"\"text\"\"\"\n")
            return
        text = read_block(session.read_line, text[3:]) if session.read_line else text[3:-3]
    session.system = text or None
    session.say("Set system message.\n")


def _show(session: ChatSession, line: str, args: list[str]) -> None:
    if not args:
        session.usage(SHOW_HELP + "\n")
        return
    what, show = args[0], session.show
    if what == "info":  # on stderr too: Ollama's showInfo(resp, false, os.Stderr)
        session.usage(describe(show))
    elif what == "parameters":
        lines = (show.get("parameters") or "").splitlines()
        session.say("Model defined parameters:\n" + ("".join(f"  {p}\n" for p in lines) if lines else
                    "  No additional parameters were specified for this model.\n") + "\n")
        if session.options:
            session.say("User defined parameters:\n" +
                        "".join(f"  {k:<30} {_go_value(v)}\n" for k, v in session.options.items()) + "\n")
    elif what == "system":
        system = session.system or show.get("system")
        session.say(f"{system}\n\n" if system else _NOTHING["system"] + "\n")
    elif what in ("license", "template"):
        session.say(f"{show.get(what) or _NOTHING[what]}\n")
    elif what == "modelfile":
        session.say(f"{show.get('modelfile') or ''}\n")
    else:
        session.say(f"Unknown command '/show {what}'. Type /? for help\n")


def _go_value(value: object) -> str:
    """A `/set parameter` value as Go's %v prints it (typed by format_parameter as Ollama's FormatParams types
    it): an int as an int, a float as the float32 it is in Ollama's Options, in strconv's 'g' (`1e+06`,
    0.123456789 as `0.12345679`), a list as [a b], a bool as true/false."""
    if isinstance(value, list):
        return "[" + " ".join(map(_go_value, value)) + "]"
    if isinstance(value, float):
        return go_float(value, 32)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return go_value(value)


_COMMANDS = {"/?": _help, "/help": _help, "/clear": _clear, "/list": _list, "/load": _load, "/save": _save,
             "/set": _set, "/show": _show}
