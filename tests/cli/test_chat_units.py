"""`velollm run`'s pieces without a server: multi-line input, parameter values, the answer writer."""

from __future__ import annotations

import io
import re

import pytest

from velollm.commands.chat_commands import run_command
from velollm.commands.chat_parameters import format_parameter
from velollm.commands.chat_render import DIM, RESET, AnswerWriter, go_duration, timings
from velollm.commands.chat_session import ChatSession, parse_value, read_message, run_interactive

from .conftest import screen


def _reader(lines):
    it = iter(lines)
    prompts = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read, prompts


def test_multi_line_input():
    read, prompts = _reader(['"""first', "second", 'third"""', "next"])
    assert read_message(read) == "first\nsecond\nthird" and prompts == [">>> ", "... ", "... "]
    assert read_message(read) == "next"
    read, _ = _reader(['"""one line"""'])
    assert read_message(read) == "one line"
    read, _ = _reader(['"""', "a", '"""'])
    assert read_message(read) == "\na\n"  # Ollama's strings.Builder: the empty first and last lines' newlines
    read, _ = _reader(["pasted\rlines\r\nhere"])  # a bracketed paste: the terminal's carriage returns
    assert read_message(read) == "pasted\nlines\nhere"
    read, _ = _reader(['"""never closed'])
    with pytest.raises(EOFError):
        read_message(read)


def test_input_is_sent_as_typed():
    """Ollama's CLI trims nothing (cmd/interactive.go writes readline's line as it came): spaces after a message,
    around a block's lines and before its closing quotes are the user's; quotes count only at a line's very start
    (opening) and end (closing); a line of spaces is a message and " /bye" is not a command."""
    read, _ = _reader(["hello   ", '  """not a block', '"""  indented  ', "  tail  ", 'end  """', '"""x""" ', 'y"""'])
    assert read_message(read) == "hello   "
    assert read_message(read) == '  """not a block'
    assert read_message(read) == '  indented  \n  tail  \nend  '
    assert read_message(read) == 'x""" \ny'  # quotes then a space do not close it

    class _Chat(_ShowOnly):
        def __init__(self) -> None:
            self.asked: list[str] = []

        def stream(self, path, body):
            self.asked.append(body["messages"][-1]["content"])
            yield {"message": {"role": "assistant", "content": "ok "}, "done": True}

    out, client = io.StringIO(), _Chat()
    session = ChatSession(client, "demo", out, color=False, err=io.StringIO())
    assert run_interactive(session, _reader(["hi  ", "   ", "", " /bye", "/set system   be   terse  ", "/bye"])[0]) == 0
    assert client.asked == ["hi  ", "   ", " /bye"]
    assert session.messages[1] == {"role": "assistant", "content": "ok "}  # the answer as streamed
    assert session.system == "be terse"  # Ollama's /set system: its words joined by one space
    run_command(session, '/set system "be brief"')
    assert session.system == '"be brief"'  # quotes kept, as Ollama keeps them


def test_parameter_values():
    assert parse_value("4") == 4 and parse_value("0.2") == 0.2 and parse_value("true") is True
    assert parse_value("False") is False and parse_value("<|eot|>") == "<|eot|>"


def test_set_parameter_values_typed_as_ollama_does():
    assert format_parameter("num_predict", ["64"]) == 64 and format_parameter("temperature", ["0.2"]) == 0.2
    assert format_parameter("stop", ["<|eot|>", "###"]) == ["<|eot|>", "###"]
    assert format_parameter("use_mmap", ["false"]) is False
    for name, value, message in (("top_k", "x", "invalid int value [x]"), ("top_p", "x", "invalid float value [x]"),
                                 ("bogus", "1", "unknown parameter 'bogus'")):
        with pytest.raises(ValueError, match=re.escape(message)):
            format_parameter(name, [value])



@pytest.mark.parametrize("name, value, expected", [
    ("seed", "-1", -1), ("top_k", "+5", 5), ("num_ctx", "9223372036854775807", 2**63 - 1),
    ("temperature", ".5", 0.5), ("temperature", "1e-1", 0.1), ("top_p", "+1.", 1.0), ("temperature", "0x1p-2", 0.25),
    ("use_mmap", "T", True), ("use_mmap", "FALSE", False), ("use_mmap", "0", False),
])
def test_parameter_values_go_parses(name, value, expected):
    assert format_parameter(name, [value]) == expected


@pytest.mark.parametrize("name, value, message", [
    ("num_predict", "1_000", "invalid int value [1_000]"), ("top_k", " 5", "invalid int value [ 5]"),
    ("num_ctx", "\u0665", "invalid int value [\u0665]"), ("seed", "9223372036854775808", "invalid int value"),
    ("num_ctx", "4096.0", "invalid int value [4096.0]"), ("temperature", "1_0.5", "invalid float value [1_0.5]"),
    ("temperature", "1e39", "invalid float value [1e39]"), ("top_p", "0.5 ", "invalid float value [0.5 ]"),
    ("use_mmap", "tRuE", "invalid bool value [tRuE]"), ("use_mmap", "yes", "invalid bool value [yes]"),
    # strconv takes these, then encoding/json refuses them: the Ollama CLI's error, never a traceback
    ("temperature", "nan", "json: unsupported value: NaN"), ("top_p", "-Inf", "json: unsupported value: -Inf"),
    ("temperature", "infinity", "json: unsupported value: +Inf"),
])
def test_parameter_values_go_refuses(name, value, message):
    """strconv.ParseInt(s, 10, 64), ParseFloat(s, 32) and ParseBool, as Ollama's api.FormatParams calls them:
    Python's int() and float() also take digit separators, spaces around, other scripts' digits and floats
    beyond float32; a NaN or an infinity reached json.dumps in the request and crashed the CLI."""
    with pytest.raises(ValueError, match=re.escape(message)):
        format_parameter(name, [value])

def _chunk(content="", thinking="", **final):
    return {"message": {"role": "assistant", "content": content, **({"thinking": thinking} if thinking else {})},
            "done": bool(final), **final}


def test_thinking_is_dimmed():
    out = io.StringIO()
    chunks = [_chunk(thinking="Let me "), _chunk(thinking="see."), _chunk("The answer"), _chunk(" is 4."),
              _chunk(done_reason="stop", eval_count=3)]
    content, thinking, final = AnswerWriter(out, color=True).write(chunks)
    assert (content, thinking, final["eval_count"]) == ("The answer is 4.", "Let me see.", 3)
    # then Ollama's two newlines, after a one-shot answer as in a chat
    assert out.getvalue() == f"Thinking...\n{DIM}Let me see.{RESET}\n...done thinking.\n\nThe answer is 4.\n\n"
    plain = io.StringIO()
    AnswerWriter(plain, color=False).write(chunks)
    assert "\x1b" not in plain.getvalue() and "Let me see." in plain.getvalue()
    only_thinking = io.StringIO()
    AnswerWriter(only_thinking, color=True).write([_chunk(thinking="hmm"), _chunk(done_reason="length")])
    assert only_thinking.getvalue() == f"Thinking...\n{DIM}hmm{RESET}\n\n"  # never closed, as in Ollama
    own_line = io.StringIO()  # thinking that ends its line: no newline added before "...done thinking."
    AnswerWriter(own_line, color=False).write([_chunk(thinking="hmm\n"), _chunk("ok"), _chunk(done_reason="stop")])
    assert own_line.getvalue() == "Thinking...\nhmm\n...done thinking.\n\nok\n\n"


def test_timings():
    text = timings({"total_duration": 2_000_000_000, "prompt_eval_count": 10, "prompt_eval_duration": 500_000_000,
                    "eval_count": 20, "eval_duration": 1_000_000_000})
    assert "prompt eval rate:     20.00 tokens/s" in text and "eval rate:            20.00 tokens/s" in text
    assert "eval count:           20 token(s)" in text
    assert "total duration:       2s" in text and "load duration" not in text  # Ollama omits a zero line


def test_go_durations():
    assert [go_duration(n) for n in (0, 5, 1_500, 7_017_324, 1_500_000_000, 123_250_000_000, 3_600_000_000_000)] == \
        ["0s", "5ns", "1.5\u00b5s", "7.017324ms", "1.5s", "2m3.25s", "1h0m0s"]


class _ShowOnly:
    """A server that only answers /api/show: a model created with MESSAGE lines."""

    def post(self, path, body):
        assert path == "/api/show"
        return {"capabilities": ["completion"], "messages": [
            {"role": "system", "content": "hidden"}, {"role": "user", "content": "Ahoy"},
            {"role": "assistant", "content": "Arr, matey."}]}


def test_interactive_run_shows_the_models_messages_first():
    out = io.StringIO()
    session = ChatSession(_ShowOnly(), "pirate", out, color=False)
    read, _ = _reader([])
    assert run_interactive(session, read) == 0
    assert out.getvalue() == ">>> Ahoy\nArr, matey.\n\n\n"  # then Ctrl-D's newline
    assert session.messages == []  # the server puts them before the chat, as Ollama's does
    out = io.StringIO()
    session = ChatSession(_ShowOnly(), "pirate", out, color=False)
    session.show["messages"][2]["content"] = "Arr, matey, the sea is wide and the wind is strong today."
    session.writer.word_wrap, session.writer.columns = True, lambda: 25  # a narrow terminal
    run_interactive(session, _reader([])[0])
    shown = screen(out.getvalue())
    assert "\x1b[K" in out.getvalue() and all(len(line) <= 20 for line in shown), shown  # wrapped as an answer is


def test_show_parameters_prints_user_values_as_go():
    """Ollama's `%v` of the values FormatParams typed: a float64/float32 in strconv's 'g' form (Go printed
    1e+06, 1.5e-05, 0.7), an int as an int, a []string as [a b], a bool as false."""
    from velollm.commands.chat_commands import run_command

    out = io.StringIO()
    session = ChatSession(_ShowOnly(), "pirate", out, color=False)
    session.show = {"parameters": ""}
    for line in ("/set parameter temperature 1000000", "/set parameter top_p 0.000015", "/set parameter min_p 0.7",
                 "/set parameter num_ctx 1000000", "/set parameter stop <|a|> ###", "/set parameter use_mmap false",
                 "/set parameter typical_p 0.123456789", "/set parameter repeat_penalty 16777217",
                 "/set parameter presence_penalty 1234567.8"):
        run_command(session, line)
    out.truncate(0)
    run_command(session, "/show parameters")
    # the float32 Ollama's Options hold, as Go 1.19 printed them (%v of float32(strconv.ParseFloat(s, 32)))
    assert out.getvalue().split("User defined parameters:\n")[1] == (
        f"  {'temperature':<30} 1e+06\n  {'top_p':<30} 1.5e-05\n  {'min_p':<30} 0.7\n"
        f"  {'num_ctx':<30} 1000000\n  {'stop':<30} [<|a|> ###]\n  {'use_mmap':<30} false\n"
        f"  {'typical_p':<30} 0.12345679\n  {'repeat_penalty':<30} 1.6777216e+07\n"
        f"  {'presence_penalty':<30} 1.2345678e+06\n\n")


def test_word_wrap_as_ollamas():
    text = "the quick brown fox jumps over the lazy dog and keeps running far away from here"
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # streamed a few characters at a time
    chunks = [_chunk(content=p) for p in pieces] + [_chunk(done_reason="stop")]
    out = io.StringIO()
    AnswerWriter(out, color=False, word_wrap=True, columns=lambda: 25).write(chunks)
    shown = screen(out.getvalue())
    assert "\x1b[K" in out.getvalue()  # a word was moved down as Ollama moves it: back over it, clear, newline
    assert all(len(line) <= 20 for line in shown), shown  # within the width less 5
    assert " ".join(w for line in shown for w in line.split()) == text  # no word cut, lost or doubled
    long = "x" * 40 + " end"  # a word longer than the width less 10: broken where it is
    out = io.StringIO()
    AnswerWriter(out, color=False, word_wrap=True, columns=lambda: 25).write([_chunk(content=long)])
    assert screen(out.getvalue()) == ["x" * 20, "x" * 20, "end", "", ""]  # a full line's space: its end
    for wrap, columns in ((False, 25), (True, 0), (True, 9)):  # --nowordwrap; not a terminal; a narrow one
        out = io.StringIO()
        AnswerWriter(out, color=False, word_wrap=wrap, columns=lambda c=columns: c).write(chunks)
        assert out.getvalue() == text + "\n\n"


def test_usage_texts_on_stderr_answers_on_stdout():
    """Ollama's interactive mode writes its usage texts (usage(), usageSet(), usageShow(), usageParameters(),
    usageShortcuts()) and `/show info` with fmt.Fprintln(os.Stderr, ...), every other answer with fmt.Println:
    `velollm run m 2>/dev/null` keeps the answers, `2>&1` shows all."""
    from velollm.commands.chat_commands import HELP, PARAMETERS_HELP, SET_HELP, SHORTCUTS_HELP, SHOW_HELP, run_command

    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(_ShowOnly(), "pirate", out, color=False, err=err)
    session.show = {"capabilities": ["completion"], "details": {"family": "llama"}, "parameters": ""}
    for line, text in (("/?", HELP), ("/help", HELP), ("/? set", SET_HELP), ("/help /show", SHOW_HELP),
                       ("/? shortcuts", SHORTCUTS_HELP), ("/set", SET_HELP), ("/set system", SET_HELP),
                       ("/set parameter", PARAMETERS_HELP), ("/set parameter seed", PARAMETERS_HELP),
                       ("/show", SHOW_HELP)):
        run_command(session, line)
        assert (out.getvalue(), err.getvalue()) == ("", text + "\n"), line  # a blank line after, as Ollama's
        err.truncate(0), err.seek(0)
    run_command(session, "/show info")
    assert (out.getvalue(), err.getvalue()) == ("", "  Model\n    architecture    llama\n\n  Capabilities\n    completion\n\n")
    err.truncate(0), err.seek(0)
    for line, answer in (("/set verbose", "Set 'verbose' mode.\n"), ("/clear", "Cleared session context\n"),
                         ("/nope", "Unknown command '/nope'. Type /? for help\n"),
                         ("/set nope", "Unknown command '/set nope'. Type /? for help\n"),
                         ("/show system", "No system message was specified for this model.\n"),
                         ("/load", "Usage:\n  /load <modelname>\n")):
        run_command(session, line)
        assert (out.getvalue(), err.getvalue()) == (answer, ""), line
        out.truncate(0), out.seek(0)
    session.show["capabilities"] = ["completion", "vision"]  # Ollama's usage() names images for a multimodal model
    run_command(session, "/?")
    assert err.getvalue() == HELP + "Use /path/to/file to include .jpg, .png, or .webp images.\n\n"


def test_chat_errors_on_ollamas_streams():
    """A refused think value: Ollama's `error: ...` on stdout, the session goes on; any other error from the chat:
    `Error: ...` on stderr, where Ollama's CLI writes it."""
    from velollm.commands.client import ServerError

    class _Refusing(_ShowOnly):
        errors = iter(['"demo" does not support thinking', "model runner has unexpectedly stopped"])

        def stream(self, path, body):
            raise ServerError(next(self.errors))
            yield

    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(_Refusing(), "demo", out, color=False, err=err)
    read, _ = _reader(["hi", "hi"])
    assert run_interactive(session, read) == 0
    assert out.getvalue().endswith('error: "demo" does not support thinking\n\n')  # then Ctrl-D's newline
    assert err.getvalue() == "Error: model runner has unexpectedly stopped\n"


def test_list_in_the_chat():
    """Ollama's interactive mode takes `/list [PREFIX]` (its ListHandler, not in /?): the server's models."""
    from velollm.commands.chat_commands import run_command

    class _Tags(_ShowOnly):
        def get(self, path):
            assert path == "/api/tags"
            return {"models": [{"name": "demo", "digest": "36dc05124a3f" + "0" * 52, "size": 789_000,
                                "modified_at": "0001-01-01T00:00:00Z"},
                               {"name": "llama3.2:latest", "digest": "a80c4f17acd5" + "0" * 52, "size": 2_019_393_189,
                                "modified_at": "0001-01-01T00:00:00Z"}]}

    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(_Tags(), "demo", out, color=False, err=err)
    run_command(session, "/list")
    assert out.getvalue() == ("NAME               ID              SIZE      MODIFIED\n"
                              "demo               36dc05124a3f    789 KB    Never\n"
                              "llama3.2:latest    a80c4f17acd5    2.0 GB    Never\n") and err.getvalue() == ""
    out.truncate(0), out.seek(0)
    run_command(session, "/list LL")
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["NAME", "llama3.2:latest"]
