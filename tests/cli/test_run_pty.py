"""`velollm run` in a pseudo-terminal against a live server: the prompt, streaming, slash commands,
history on the arrow keys, multi-line input, and /bye."""

from __future__ import annotations

import re
import sys

import pexpect

from tests.serve_process import REPO

from .conftest import cli_env, screen, terminal_signals

PROMPT = ">>> "
_COUNT = re.compile(r"prompt eval count:\s+(\d+) token")
_EVAL = re.compile(r"eval count:\s+(\d+) token")


def _spawn(url: str, home, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "velollm.cli", "run", "demo", *args], cwd=str(REPO),
                          env=cli_env(url, home), encoding="utf-8", timeout=120, dimensions=(40, 200),
                          preexec_fn=terminal_signals)
    child.expect_exact(PROMPT)
    return child


def _bye(child: pexpect.spawn) -> None:
    """End the session as a user does; the process exits (status checked by the callers that care)."""
    child.sendline("/bye")
    child.expect(pexpect.EOF)


def _ask(child: pexpect.spawn, text: str) -> tuple[int, int]:
    """Send a message with verbose on; (prompt tokens, generated tokens) from Ollama's timing lines."""
    child.sendline(text)
    child.expect(_COUNT)
    prompt = int(child.match.group(1))
    child.expect(r"\neval count:\s+(\d+) token")
    generated = int(child.match.group(1))
    child.expect_exact(PROMPT)
    return prompt, generated


def test_interactive_chat(live, tmp_path):
    child = _spawn(live, tmp_path, "--verbose")
    try:
        child.sendline("/set parameter num_predict 4")
        child.expect_exact("Set parameter 'num_predict' to '4'")
        child.expect_exact(PROMPT)
        first, generated = _ask(child, "hi")
        assert first > 0 and 1 <= generated <= 4  # num_predict reached the server
        second, _ = _ask(child, "hi")
        assert second > first  # the first exchange is in the history
        child.sendline("/clear")
        child.expect_exact("Cleared session context")
        child.expect_exact(PROMPT)
        assert _ask(child, "hi")[0] == first  # history gone: the same prompt as the first
        child.sendline("/clear")
        child.expect_exact(PROMPT)
        child.sendline("/set system You are a terse assistant.")
        child.expect_exact("Set system message.")
        child.expect_exact(PROMPT)
        assert _ask(child, "hi")[0] > first  # the system message is in the prompt
        child.sendline("/clear")
        child.expect_exact(PROMPT)
        child.sendline('"""first line')
        child.expect_exact("... ")
        child.sendline('second line"""')
        child.expect(_COUNT)
        multi = int(child.match.group(1))
        child.expect_exact(PROMPT)
        assert multi > first
        child.sendline("/show info")
        child.expect("architecture\\s+llama")
        child.expect("context length\\s+\\d+")
        child.expect_exact(PROMPT)
        child.send("\x1b[A")  # arrow up: the last line again (/show info), then Enter
        child.send("\r")
        child.expect("architecture\\s+llama")
        child.expect_exact(PROMPT)
        child.sendline("/nonsense")
        child.expect_exact("Unknown command '/nonsense'. Type /? for help")
        child.expect_exact(PROMPT)
        _bye(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    # the history survives the session, in ~/.velollm/history
    assert "/show info" in (tmp_path / ".velollm" / "history").read_text()


def test_ctrl_d_leaves(live, tmp_path):
    child = _spawn(live, tmp_path)
    try:
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def _command(child: pexpect.spawn, line: str, *answers: str) -> None:
    child.sendline(line)
    for answer in answers:
        child.expect_exact(answer)
    child.expect_exact(PROMPT)


def test_slash_commands_in_ollamas_words(live, tmp_path):
    import json

    child = _spawn(live, tmp_path)
    try:
        _command(child, "/set parameter num_predict many", "Couldn't set parameter: \"invalid int value [many]\"")
        _command(child, "/set parameter nonsense 1", "Couldn't set parameter: \"unknown parameter 'nonsense'\"")
        _command(child, "/set parameter num_predict 48", "Set parameter 'num_predict' to '48'")
        _command(child, "/show parameters", "No additional parameters were specified for this model.",
                 "User defined parameters:", "num_predict")
        _command(child, "/show system", "No system message was specified for this model.")
        _command(child, "/set blah", "Unknown command '/set blah'. Type /? for help")
        _command(child, "/set format json", "Set format to 'json' mode.")
        child.sendline("give me json")
        child.expect_exact("give me json")
        child.expect_exact(PROMPT)
        assert child.before.endswith("\r\n\r\n")  # a blank line before the next prompt, as in Ollama
        answer = child.before.strip()
        assert isinstance(json.loads(answer), dict), answer  # the format reached the server
        _command(child, "/set noformat", "Disabled format.")
        _command(child, "/load no-such-model", "Loading model 'no-such-model'", "Couldn't find model 'no-such-model'")
        _command(child, "/load demo", "Loading model 'demo'")
        _command(child, "/?", "/load <model>", "/? shortcuts")
        _command(child, "/save bad!name", "error: The model name 'bad!name' is invalid")
        _command(child, "/set think", 'warning: model "demo" does not support thinking output', "Set 'think' mode.")
        _command(child, "/set nothink", 'warning: model "demo" does not support thinking output',
                 "Set 'nothink' mode.")
        _command(child, "/? shortcuts", "Alt + b            Move back (left) one word")
        _bye(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_a_pasted_block_is_one_message(live, tmp_path):
    import httpx

    text = "first line\nsecond line\nthird"
    body = {"model": "demo", "stream": False, "options": {"num_predict": 1}, "messages": [{"role": "user", "content": text}]}
    expected = httpx.post(f"{live}/api/chat", json=body, timeout=60).json()["prompt_eval_count"]
    child = _spawn(live, tmp_path, "--verbose")
    try:
        _command(child, "/set parameter num_predict 2", "Set parameter 'num_predict' to '2'")
        child.send("\x1b[200~" + text.replace("\n", "\r") + "\x1b[201~\r")  # a terminal's bracketed paste
        child.expect(_COUNT)
        assert int(child.match.group(1)) == expected  # the whole paste is one message
        child.expect_exact(PROMPT)
        assert "prompt eval count" not in child.before  # one answer, not one per line
        _bye(child)
    finally:
        child.close(force=True)


def _counter(url: str, name: str, label: str = "") -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


def _aborted(url: str) -> float:
    return _counter(url, "velollm_aborted_requests_total")


def _generated(url: str) -> float:
    return _counter(url, "velollm_tokens_total", 'kind="generation"')


def test_ctrl_c_stops_the_answer_and_keeps_the_question(live, tmp_path):
    import time

    aborted = _aborted(live)
    child = _spawn(live, tmp_path, "--verbose")
    try:
        _command(child, "/set parameter num_predict 2", "Set parameter 'num_predict' to '2'")
        alone, _ = _ask(child, "hi")
        _command(child, "/clear", "Cleared session context")
        _command(child, "/set parameter num_predict 100000", "Set parameter 'num_predict' to '100000'")
        # Greedy: the demo's answer to "hi" runs thousands of tokens without an end-of-turn (sampled, it can
        # draw one in the first second and end by itself: CI saw the answer complete before the Ctrl-C).
        _command(child, "/set parameter temperature 0", "Set parameter 'temperature' to '0'")
        generated = _generated(live)
        child.sendline("hi")
        child.expect_exact("hi")
        deadline = time.monotonic() + 60  # the answer is streaming: the server is generating it
        while _generated(live) == generated:
            assert time.monotonic() < deadline, "the answer never started"
            time.sleep(0.05)
        child.sendintr()
        child.expect_exact(PROMPT)  # the session goes on
        assert "eval count" not in child.before  # the answer stopped before its end
        deadline = time.monotonic() + 10
        while _aborted(live) == aborted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _aborted(live) == aborted + 1  # and the server stopped generating it
        _command(child, "/set parameter num_predict 2", "Set parameter 'num_predict' to '2'")
        after, _ = _ask(child, "hi")
        assert after > alone  # the interrupted question stayed in the history, as in Ollama
        _bye(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_multi_line_system_message(live, tmp_path):
    child = _spawn(live, tmp_path, "--verbose")
    try:
        _command(child, "/set parameter num_predict 1", "Set parameter 'num_predict' to '1'")
        alone, _ = _ask(child, "hi")
        _command(child, "/clear", "Cleared session context")
        child.sendline('/set system """You are terse.')
        child.expect_exact("... ")
        child.sendline('Answer in French."""')
        child.expect_exact("Set system message.")
        child.expect_exact(PROMPT)
        _command(child, "/show system", "You are terse.\r\nAnswer in French.")
        assert _ask(child, "hi")[0] > alone  # both lines are in the prompt
        _bye(child)
    finally:
        child.close(force=True)


def test_history_can_be_turned_off(live, tmp_path):
    child = _spawn(live, tmp_path)
    try:
        _command(child, "/set parameter num_predict 1", "Set parameter 'num_predict' to '1'")
        _command(child, "/set nohistory")
        _command(child, "a secret line")
        _bye(child)
    finally:
        child.close(force=True)
    history = (tmp_path / ".velollm" / "history").read_text()
    assert "/set nohistory" in history and "a secret line" not in history
    # $OLLAMA_NOHISTORY: nothing is kept
    home = tmp_path / "other"
    home.mkdir()
    child = pexpect.spawn(sys.executable, ["-m", "velollm.cli", "run", "demo"], cwd=str(REPO), encoding="utf-8",
                          env=cli_env(live, home, OLLAMA_NOHISTORY="1"), timeout=120, dimensions=(40, 200),
                          preexec_fn=terminal_signals)
    try:
        child.expect_exact(PROMPT)
        _command(child, "/show system", "No system message")
        _bye(child)
    finally:
        child.close(force=True)
    assert not (home / ".velollm" / "history").exists()


def test_ctrl_c_on_a_typed_line_drops_it_without_the_hint(live, tmp_path):
    child = _spawn(live, tmp_path)
    try:
        child.send("half a quest")
        child.expect_exact("half a quest")  # read by readline (its echo): a ^C flushes what the tty still holds
        child.sendintr()
        child.expect_exact(PROMPT)
        assert "Use Ctrl + d" not in child.before  # Ollama gives the hint only on an empty line
        child.sendintr()
        child.expect_exact("Use Ctrl + d or /bye to exit.")
        child.expect_exact(PROMPT)
        _bye(child)
    finally:
        child.close(force=True)



def test_answers_are_word_wrapped_as_ollamas(live, tmp_path):
    # Ollama wraps on a terminal unless --nowordwrap / `/set nowordwrap`: a word that would pass the width
    # less 5 moves down (the cursor backs over it and clears the line's end: ESC[nD ESC[K)
    for args, toggle, wrapped in (([], None, True), (["--nowordwrap"], None, False), ([], "/set nowordwrap", False),
                                  (["--nowordwrap"], "/set wordwrap", True)):
        child = pexpect.spawn(sys.executable, ["-m", "velollm.cli", "run", "demo", "-o", "num_predict=60", "-o",
                                               "seed=3", *args], cwd=str(REPO), env=cli_env(live, tmp_path),
                              encoding="utf-8", timeout=120, dimensions=(40, 30), preexec_fn=terminal_signals)
        try:
            child.expect_exact(PROMPT)
            if toggle:
                child.sendline(toggle)
                child.expect_exact(f"Set '{toggle.split()[1]}' mode.")
                child.expect_exact(PROMPT)
            child.sendline("tell me a story")
            child.expect_exact(PROMPT)
            answer = child.before.split("\r\n", 1)[1].replace("\r\n", "\n")
            assert ("\x1b[K" in answer) == wrapped, (args, toggle, answer)
            assert (max(map(len, screen(answer))) <= 25) == wrapped, (args, toggle, answer)
            _bye(child)
        finally:
            child.close(force=True)


def test_no_chat_when_stdout_is_not_a_terminal(live, tmp_path):
    """`ollama run MODEL > file` at a terminal: quiet, as Ollama's run ("Be quiet if we're redirecting to a pipe or
    file"): the model loads, nothing is asked, nothing is written, the command ends."""
    import shlex

    out = tmp_path / "out.txt"
    command = f"exec {shlex.quote(sys.executable)} -m velollm.cli run demo > {shlex.quote(str(out))}"
    child = pexpect.spawn("/bin/sh", ["-c", command], cwd=str(REPO), env=cli_env(live, tmp_path), encoding="utf-8",
                          timeout=120, dimensions=(40, 200), preexec_fn=terminal_signals)
    try:
        child.expect(pexpect.EOF)
        assert PROMPT not in child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0 and out.read_text() == ""
