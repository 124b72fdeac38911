"""Commands that go through the server to its Ollama upstream: `pull` (progress from Ollama's NDJSON)
and `run` on a thinking model (thinking dimmed in a terminal); `optimize --check` against the server."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pexpect
import pytest

from tests.ollama_upstream import fake_ollama
from tests.serve_process import REPO, start_serve, stop_serve

from .conftest import cli_env, terminal_signals, velollm


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_ollama(["thinker:latest", "seer:latest"]) as upstream:
        proc, url, _log, _ = start_serve(tmp_path_factory.mktemp("upstream"), "--upstream", upstream)
        try:
            yield url
        finally:
            stop_serve(proc)


def test_pull_through_the_upstream(proxied, tmp_path):
    out = velollm(proxied, tmp_path, "pull", "newmodel")
    assert out.returncode == 0, out.stderr
    for text in ("pulling manifest", "pulling abababababab", "3.0/3.0 MB", "verifying sha256 digest", "success"):
        assert text in out.stderr
    names = [m["name"] for m in httpx.get(f"{proxied}/api/tags").json()["models"]]
    assert "newmodel:latest" in names  # the upstream has it now, and VeloLLM lists it
    failed = velollm(proxied, tmp_path, "pull", "missing-model")
    assert failed.returncode == 1 and "pull model manifest: file does not exist" in failed.stderr


def test_push_through_the_upstream(proxied, tmp_path):
    out = velollm(proxied, tmp_path, "push", "me/mymodel", "--insecure")
    assert out.returncode == 0, out.stderr
    for text in ("(insecure registry)", "retrieving manifest", "pushing abababababab", "2.0/2.0 MB", "pushing manifest",
                 "success"):
        assert text in out.stderr
    assert "(insecure registry)" not in velollm(proxied, tmp_path, "push", "me/mymodel").stderr
    failed = velollm(proxied, tmp_path, "push", "mymodel")
    assert failed.returncode == 1 and "not authorized to push to this namespace" in failed.stderr


def test_run_pulls_a_missing_model_first(proxied, tmp_path):
    # `ollama run M` pulls M when the server does not have it, then chats
    out = velollm(proxied, tmp_path, "run", "fresh-model", "hi")
    assert out.returncode == 0, out.stderr
    assert "pulling manifest" in out.stderr and "success" in out.stderr and "Hello there!" in out.stdout
    failed = velollm(proxied, tmp_path, "run", "missing-one", "hi")
    assert failed.returncode == 1
    assert "model 'missing-one' not found" in failed.stderr
    assert "pull model manifest: file does not exist" in failed.stderr


def test_ps_and_stop_see_the_upstreams_running_models(proxied, tmp_path):
    ps = velollm(proxied, tmp_path, "ps")
    assert ps.returncode == 0, ps.stderr
    assert "thinker:latest" in ps.stdout  # running on the Ollama upstream (its /api/ps), listed with ours
    stop = velollm(proxied, tmp_path, "stop", "thinker")
    assert stop.returncode == 0, stop.stderr  # found, and the unload went to the upstream
    idle = velollm(proxied, tmp_path, "stop", "seer")  # listed, not loaded: nothing to stop, success as Ollama's
    assert idle.returncode == 0 and not idle.stderr, idle.stderr
    assert velollm(proxied, tmp_path, "stop", "nobody-has-it").returncode == 1


def test_run_sends_the_images_a_vision_model_is_shown(proxied, tmp_path):
    # `ollama run llava "what is in /path/cat.png"`: the file goes in the message's images, out of its text
    image = tmp_path / "my cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    escaped = str(image).replace(" ", "\\ ")
    out = velollm(proxied, tmp_path, "run", "seer", f"what is in {escaped} ?")
    assert out.returncode == 0, out.stderr
    assert f"Added image '{image}'" in out.stderr
    assert "I see 1 image(s) of 412 base64 characters" in out.stdout and "the text was 'what is in  ?'" in out.stdout
    missing = velollm(proxied, tmp_path, "run", "seer", "what is in /no/such/file.png")
    assert "I see" not in missing.stdout and "Hello there!" in missing.stdout  # not a file: it stays text
    plain = velollm(proxied, tmp_path, "run", "thinker", "--no-think", f"what is in {image}")
    assert "Hello there!" in plain.stdout and "Added image" not in plain.stderr  # not a vision model


def test_a_line_starting_with_an_image_path_is_a_message(proxied, tmp_path):
    # Ollama's chat with a vision model: `/path/cat.png what is this?` is a message, not an unknown command
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    child = pexpect.spawn(sys.executable, ["-m", "velollm.cli", "run", "seer"], cwd=str(REPO),
                          env=cli_env(proxied, tmp_path), encoding="utf-8", timeout=60, preexec_fn=terminal_signals)
    try:
        child.expect_exact(">>> ")
        child.sendline(f"{image} what is this?")
        child.expect_exact(f"Added image '{image}'")
        child.expect_exact("I see 1 image(s) of 412 base64 characters")
        child.expect_exact(">>> ")
        assert "Unknown command" not in child.before
        child.sendline(f"/set system look at {image}")  # a command's name first: still the command
        child.expect_exact("Set system message.")
        child.expect_exact(">>> ")
        child.sendline("/nothing here")
        child.expect_exact("Unknown command '/nothing'. Type /? for help")
        child.expect_exact(">>> ")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_pull_without_an_upstream(tmp_path):
    proc, url, _log, _ = start_serve(tmp_path, "--no-upstream")
    try:
        out = velollm(url, tmp_path, "pull", "llama3.2")
        assert out.returncode == 1 and "VeloLLM does not download models" in out.stderr and "--upstream" in out.stderr
        out = velollm(url, tmp_path, "push", "me/llama3.2")
        assert out.returncode == 1 and "does not push models" in out.stderr, out.stderr
    finally:
        stop_serve(proc)


def test_run_shows_thinking_dimmed(proxied, tmp_path):
    child = pexpect.spawn(sys.executable, ["-m", "velollm.cli", "run", "thinker"], cwd=str(REPO),
                          env=cli_env(proxied, tmp_path), encoding="utf-8", timeout=60, preexec_fn=terminal_signals)
    try:
        child.expect_exact(">>> ")
        child.sendline("hi")
        child.expect_exact("Thinking...\r\n\x1b[2mThe user says hi.\x1b[0m\r\n...done thinking.\r\n\r\nHello there!")
        child.expect_exact(">>> ")
        child.sendline("/set nothink")
        child.expect_exact("Set 'nothink' mode.")
        child.expect_exact(">>> ")
        child.sendline("hi")
        child.expect_exact("Hello there!")
        assert "Thinking" not in child.before
        child.expect_exact(">>> ")
        child.sendline("/show info")
        child.expect(r"architecture\s+qwen3")
        child.expect(r"context length\s+40960")
        child.expect_exact(">>> ")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    piped = velollm(proxied, tmp_path, "run", "thinker", stdin="hi")  # not a terminal: no escape codes
    assert piped.returncode == 0 and "\x1b" not in piped.stdout and "The user says hi." in piped.stdout
    hidden = velollm(proxied, tmp_path, "run", "thinker", "--hidethinking", "hi")  # Ollama's flag
    assert hidden.returncode == 0, hidden.stderr
    assert "Hello there!" in hidden.stdout and "The user says hi." not in hidden.stdout
    assert "Thinking" not in hidden.stdout
    # Ollama's --think=VALUE: false stops the thinking, a level asks for it; a bare --think before the prompt
    off = velollm(proxied, tmp_path, "run", "thinker", "--think=false", "hi")
    assert off.returncode == 0 and "Hello there!" in off.stdout and "The user says hi." not in off.stdout
    for words in (["thinker", "--think=high", "hi"], ["thinker", "--think", "hi"], ["--think", "thinker", "hi"]):
        on = velollm(proxied, tmp_path, "run", *words)
        assert on.returncode == 0 and "The user says hi." in on.stdout, (words, on.stderr)
    bad = velollm(proxied, tmp_path, "run", "thinker", "--think=sure", "hi")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "invalid think value 'sure'" in bad.stderr


def test_optimize_check(tmp_path):
    proc, url, _log, _ = start_serve(tmp_path, "--max-num-seqs", "3", "--no-upstream")
    try:
        out = velollm(url, tmp_path, "optimize", "--check")
        assert out.returncode == 1, out.stderr  # 3 sequences is not what this machine is advised
        rows = [line for line in out.stdout.splitlines() if "demo" in line]
        seqs = next(line for line in rows if "max_num_seqs" in line)
        assert " 3 " in seqs and "differs" in seqs
        device = next(line for line in rows if " device " in line)
        assert "ok" in device
    finally:
        stop_serve(proc)
    nobody = velollm("http://127.0.0.1:9", tmp_path, "optimize", "--check")
    assert nobody.returncode == 2 and "no VeloLLM server answers" in nobody.stderr
