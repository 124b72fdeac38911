"""`velollm run` one-shot (argument and pipe), in-process fallback, `ps`, `show`, `stop` against a live server."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.serve_process import free_port
from velollm.commands.client import server_url
from velollm.commands.ps import human_bytes, processor, until

from .conftest import velollm


def test_one_shot_prompt_and_pipe(live, tmp_path):
    # flags between the model and the prompt, as `ollama run demo --verbose why is the sky blue` takes them
    out = velollm(live, tmp_path, "run", "demo", "--verbose", "-o", "num_predict=8", "hello", "there")
    assert out.returncode == 0, out.stderr
    # the answer on stdout, Ollama's timing lines on stderr (`> answer.txt` keeps only the answer)
    assert "prompt eval count" in out.stderr and "eval count" not in out.stdout and out.stdout.strip()
    assert ">>>" not in out.stdout
    assert 1 <= int(out.stderr.split("\neval count:")[1].split()[0]) <= 8  # the option reached the server
    assert re.search(r"^total duration: +[0-9.]+(ms|s|\u00b5s)$", out.stderr, re.MULTILINE)  # Go's duration format
    piped = velollm(live, tmp_path, "run", "--verbose", "-o", "num_predict=8", "demo", stdin="hello there")
    assert piped.returncode == 0, piped.stderr
    # the same message either way: the same prompt token count
    count = [line for line in out.stderr.splitlines() if "prompt eval count" in line]
    assert count == [line for line in piped.stderr.splitlines() if "prompt eval count" in line]
    # stdin first, then the words, joined by a space as Ollama's RunHandler joins them: "hello" + "there"
    # is the prompt "hello there"
    both = velollm(live, tmp_path, "run", "--verbose", "-o", "num_predict=8", "demo", "there", stdin="hello")
    assert both.returncode == 0 and [line for line in both.stderr.splitlines() if "prompt eval count" in line] == count
    apart = velollm(live, tmp_path, "run", "--verbose", "-o", "num_predict=8", "demo", "there", stdin="hello\n\n")
    assert [line for line in apart.stderr.splitlines() if "prompt eval count" in line] != count  # kept as piped
    mixed = velollm(live, tmp_path, "run", "demo", "hello", "--verbose", "there", "-o", "num_predict=8")
    assert [line for line in mixed.stderr.splitlines() if "prompt eval count" in line] == count
    bare = velollm(live, tmp_path, "run")  # the model is what is missing; a prompt never is
    assert bare.returncode == 1 and bare.stderr == "Error: the following arguments are required: model\n"
    unknown = velollm(live, tmp_path, "run", "demo", "--bogus", "hi")
    assert unknown.returncode == 1 and unknown.stderr == "Error: unknown flag: --bogus\n"


def test_one_shot_answer_ends_as_ollamas(live, tmp_path):
    """stdout is the answer then Ollama's two newlines (cmd.go generate(): `if opts.Prompt != "" { fmt.Println();
    fmt.Println() }`), whether the prompt is an argument or piped; nothing else."""
    import httpx

    options = {"num_predict": 6, "temperature": 0}
    body = {"model": "demo", "stream": False, "options": options, "messages": [{"role": "user", "content": "hello"}]}
    answer = httpx.post(f"{live}/api/chat", json=body, timeout=120).json()["message"]["content"]
    assert answer
    flags = ["-o", "num_predict=6", "-o", "temperature=0"]
    for out in (velollm(live, tmp_path, "run", *flags, "demo", "hello"),
                velollm(live, tmp_path, "run", *flags, "demo", stdin="hello")):
        assert out.returncode == 0 and out.stdout == answer + "\n\n", (out.stdout, out.stderr)


def test_run_unknown_model(live, tmp_path):
    out = velollm(live, tmp_path, "run", "no-such-model", "hi")
    assert out.returncode == 1 and "not found" in out.stderr
    out = velollm(live, tmp_path, "run", "-o", "num_predict", "demo", "hi")
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "NAME=VALUE" in out.stderr


def test_run_in_process_when_no_server_answers(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = velollm(url, tmp_path, "run", "--verbose", "-o", "num_predict=8", "demo", "hello", timeout=300,
                  VELOLLM_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    assert f"no server answers at {url}: running demo in this process" in out.stderr
    assert "loading" in out.stderr and "tensors" in out.stderr and "MB/s" in out.stderr  # the load progress
    assert "prompt eval count" in out.stderr


def test_run_in_process_unknown_model_is_said_in_words(tmp_path):
    """No server, a model nobody has: what went wrong in a line, as Ollama says it, not the loader's traceback
    (the in-process server logged every failed load with logger.exception)."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = velollm(url, tmp_path, "run", "no-such-model", "hi", timeout=300, VELOLLM_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 1
    assert "Error: cannot run no-such-model: model 'no-such-model' not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_ps_show_stop(live, tmp_path):
    velollm(live, tmp_path, "run", "-o", "num_predict=2", "demo", "hi")  # loaded (pinned: the server's --model)
    ps = velollm(live, tmp_path, "ps")
    assert ps.returncode == 0, ps.stderr
    header, row = ps.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.split()[0] == "demo" and "100% CPU" in row and "Forever" in row
    show = velollm(live, tmp_path, "show", "demo")
    assert show.returncode == 0, show.stderr
    for text in ("Model", "architecture", "llama", "context length", "quantization", "Capabilities", "completion"):
        assert text in show.stdout
    template = velollm(live, tmp_path, "show", "demo", "--template")
    assert template.returncode == 0 and template.stdout.strip() and "architecture" not in template.stdout
    missing = velollm(live, tmp_path, "show", "nothing-here")
    assert missing.returncode == 1 and "not found" in missing.stderr
    stop = velollm(live, tmp_path, "stop", "nothing-here")
    assert stop.returncode == 1 and 'couldn\'t find model "nothing-here" to stop' in stop.stderr
    stop = velollm(live, tmp_path, "stop", "demo")
    assert stop.returncode == 0, stop.stderr
    assert "demo stays loaded" in stop.stderr  # pinned by the server's --model: said, not silently kept


def test_no_server(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["ps"], ["show", "demo"], ["stop", "demo"], ["pull", "demo"]):
        out = velollm(url, tmp_path, *command)
        assert out.returncode == 1 and f"no VeloLLM server answers at {url}" in out.stderr


def test_formatting():
    assert server_url({}) == "http://127.0.0.1:8000"
    assert server_url({"VELOLLM_HOST": "0.0.0.0:9000"}) == "http://127.0.0.1:9000"
    assert server_url({"VELOLLM_HOST": "https://example.org/"}) == "https://example.org:443"
    assert server_url({"VELOLLM_HOST": "[::1]:7"}) == "http://[::1]:7"
    assert human_bytes(4_700_000_000) == "4.7 GB" and human_bytes(999) == "999 B" and human_bytes(2_000_000) == "2 MB"
    # Ollama's format.HumanBytes: one decimal below 10 unless whole, the whole number cut from 10 up
    assert human_bytes(2_019_393_189) == "2.0 GB" and human_bytes(13_400_000_000) == "13 GB"
    assert human_bytes(134_900_000) == "134 MB" and human_bytes(1_500) == "1.5 KB" and human_bytes(2 * 10**12) == "2 TB"
    assert processor(100, 0) == "100% CPU" and processor(100, 100) == "100% GPU"
    assert processor(100, 25) == "75%/25% CPU/GPU"
    assert processor(100, 101) == "Unknown" and processor(0, 5) == "Unknown" and processor(0, 0) == "100% CPU"
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert until("2026-01-01T00:04:30Z", now) == "4 minutes from now"
    # Ollama's format.humanDuration words
    assert until("2026-01-01T01:00:00.000000Z", now) == "About an hour from now"
    assert until("2026-01-01T00:01:30Z", now) == "About a minute from now"
    assert until("2026-01-01T00:00:30Z", now) == "30 seconds from now"
    assert until("2026-01-01T05:40:00Z", now) == "6 hours from now" and until("2026-01-04T00:00:00Z", now) == "3 days from now"
    assert until("2025-12-31T00:00:00Z", now) == "Stopping..." and until("2318-01-01T00:00:00Z", now) == "Forever"


def test_ps_piped_keeps_long_names_and_quoted_host(live, tmp_path):
    import httpx

    modelfile = httpx.post(f"{live}/api/show", json={"model": "demo"}, timeout=60).json()["modelfile"]
    path = next(line[5:] for line in modelfile.splitlines() if line.startswith("FROM /"))  # the demo's folder
    assert len(path) > 40
    loaded = httpx.post(f"{live}/api/generate", json={"model": path, "prompt": "", "keep_alive": "10m"}, timeout=120)
    assert loaded.json()["done_reason"] == "load"
    try:
        # piped, with no COLUMNS: rich would cut rows to 80 columns; Ollama's table never cuts a name. And
        # $VELOLLM_HOST in quotes, as Ollama trims $OLLAMA_HOST
        ps = velollm(f'"{live}"', tmp_path, "ps", COLUMNS="")
        assert ps.returncode == 0, ps.stderr
        row = next(line for line in ps.stdout.splitlines() if "minutes from now" in line)
        assert row.split()[0] == path and row.rstrip().endswith("from now")
    finally:
        httpx.post(f"{live}/api/generate", json={"model": path, "keep_alive": 0}, timeout=60)


def test_host_forms():
    assert server_url({"VELOLLM_HOST": "'127.0.0.1:9000'"}) == "http://127.0.0.1:9000"
    assert server_url({"VELOLLM_HOST": "127.0.0.1:port"}) == "http://127.0.0.1:8000"  # Ollama: the default port


@pytest.mark.parametrize("value, url", [
    ("gpu-box", "http://gpu-box:8000"),  # no scheme: http, our default port (Ollama's 11434)
    ("gpu-box:9000", "http://gpu-box:9000"),
    ("http://gpu-box", "http://gpu-box:80"),  # a scheme without a port: the scheme's port, as Ollama's envconfig.Host
    ("https://gpu-box", "https://gpu-box:443"),
    ("https://gpu-box:8443", "https://gpu-box:8443"),
    ("https://gpu-box/velollm/", "https://gpu-box:443/velollm"),  # a path: the base path, kept
    ("gpu-box:8000/a/b", "http://gpu-box:8000/a/b"),
    ("gpu-box:99999", "http://gpu-box:8000"), ("gpu-box:-1", "http://gpu-box:8000"),  # a bad port: the default
    ("https://gpu-box:x", "https://gpu-box:443"), ("gpu-box:", "http://gpu-box:8000"),
    (":9000", "http://127.0.0.1:9000"), ("0.0.0.0", "http://127.0.0.1:8000"),  # bind-everywhere: loopback
    ("::", "http://[::1]:8000"), ("[::]:9", "http://[::1]:9"), ("::1", "http://[::1]:8000"),
    ("[::1]", "http://[::1]:8000"), (' "gpu-box:1" ', "http://gpu-box:1"), ("", "http://127.0.0.1:8000"),
])
def test_velollm_host_read_as_ollama_reads_its_host(value, url):
    assert server_url({"VELOLLM_HOST": value}) == url


def test_a_base_path_prefixes_every_request():
    from velollm.commands.client import ServerClient

    with ServerClient(server_url({"VELOLLM_HOST": "https://gpu-box/velollm"})) as client:
        assert str(client.http.build_request("GET", "/api/tags").url) == "https://gpu-box/velollm/api/tags"


def test_run_format_json_and_ollamas_other_run_flags(live, tmp_path):
    import json

    out = velollm(live, tmp_path, "run", "demo", "--format", "json", "--nowordwrap", "-o", "num_predict=48",
                  "give me json")
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), dict), out.stdout  # the format reached the server


def test_show_text_is_laid_out_as_ollamas():
    from velollm.commands.show import describe

    show = {"details": {"family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072,
                           "llama.embedding_length": 3072},
            "capabilities": ["completion", "tools"], "license": "LLAMA 3.2 LICENSE\nsecond line\nthird",
            "parameters": 'stop                           "<|eot_id|>"\ntemperature                    0.6'}
    assert describe(show) == (
        "  Model\n"
        "    architecture        llama\n"
        "    parameters          3.2B\n"
        "    context length      131072\n"
        "    embedding length    3072\n"
        "    quantization        Q4_K_M\n\n"
        "  Capabilities\n    completion\n    tools\n\n"
        '  Parameters\n    stop           "<|eot_id|>"\n    temperature    0.6\n\n'
        "  License\n    LLAMA 3.2 LICENSE\n    second line\n    ...\n\n")  # more lines follow: "..."


def test_errors_and_flags_as_ollamas(live, tmp_path):
    # Ollama's CLI prints the server's message after "Error: " (api.StatusError: no status code appended)
    for command in (["show", "nothing-here"], ["rm", "nothing-here"], ["rm", "nothing-here", "demo"]):
        out = velollm(live, tmp_path, *command)
        assert out.returncode == 1 and out.stderr.strip() == "Error: model 'nothing-here' not found", out.stderr
    stop = velollm(live, tmp_path, "stop", "nothing-here")
    assert stop.returncode == 1 and stop.stderr.strip() == 'Error: couldn\'t find model "nothing-here" to stop'
    two = velollm(live, tmp_path, "show", "demo", "--license", "--template")
    only_one = "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
    assert two.returncode == 1 and two.stderr.strip() == f"Error: {only_one}"
    insecure = velollm(live, tmp_path, "run", "demo", "--insecure", "-o", "num_predict=2", "hi")  # run's flag too
    assert insecure.returncode == 0, insecure.stderr
    velollm(live, tmp_path, "run", "-o", "num_predict=2", "demo", "hi")
    ps = velollm(live, tmp_path, "ps", "de")  # `ollama ps PREFIX`
    assert ps.returncode == 0 and [line.split()[0] for line in ps.stdout.splitlines()] == ["NAME", "demo"]
    ps = velollm(live, tmp_path, "ps", "nomatch")
    assert ps.returncode == 0 and len(ps.stdout.splitlines()) == 1


def test_version_as_ollamas(live, tmp_path):
    from velollm import __version__

    for flag in ("-v", "--version"):
        out = velollm(live, tmp_path, flag)
        assert out.returncode == 0 and out.stdout == f"velollm version is {__version__}\n", out.stderr
    url = f"http://127.0.0.1:{free_port()}"
    out = velollm(url, tmp_path, "-v")
    assert out.returncode == 0
    assert out.stdout == ("Warning: could not connect to a running VeloLLM server\n"
                          f"Warning: client version is {__version__}\n")
    bare = velollm(live, tmp_path)  # Ollama's bare `ollama`: its usage, exit status 0
    assert bare.returncode == 0 and "usage: velollm" in bare.stdout and "run" in bare.stdout
    for words, usage in ((["help"], "usage: velollm "), (["help", "run"], "usage: velollm run ")):  # cobra's help
        out = velollm(live, tmp_path, *words)
        assert out.returncode == 0 and out.stdout.startswith(usage), out.stdout + out.stderr


def test_list_asks_the_server(live, tmp_path):
    """`list` is the server's /api/tags, as Ollama's is: with $VELOLLM_HOST naming a server, its models, not this
    machine's store (an empty one here)."""
    import httpx

    store = tmp_path / "store"
    store.mkdir()
    demo = next(m for m in httpx.get(f"{live}/api/tags", timeout=60).json()["models"] if m["name"] == "demo")
    out = velollm(live, tmp_path, "list", OLLAMA_MODELS=str(store))
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no log line per request either
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "ID", "SIZE", "MODIFIED"] and "NATIVE" not in header
    row = next(r for r in rows if r.split()[0] == "demo")
    assert row.split()[1] == demo["digest"][:12] and f" {human_bytes(demo['size'])} " in row and " ago" in row
    assert demo["details"]["quantization_level"] in row and "QUANTIZATION" in header  # carried by /api/tags
    # `ollama ls PREFIX`: the case ignored; nothing matching: the header alone
    assert [r.split()[0] for r in velollm(live, tmp_path, "ls", "DE").stdout.splitlines()[1:]] == ["demo"]
    assert velollm(live, tmp_path, "ls", "zzz").stdout == "NAME    ID    SIZE    MODIFIED\n"


def test_list_without_a_server(tmp_path, monkeypatch, capsys):
    from velollm.cli import main
    from velollm.commands import client

    url = f"http://127.0.0.1:{free_port()}"  # $VELOLLM_HOST names it; nothing answers there
    out = velollm(url, tmp_path, "list")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"Error: could not connect to a VeloLLM server at {url}, run 'velollm serve' to start it\n"
    # no $VELOLLM_HOST and nothing at the default address: the local store, as before
    monkeypatch.delenv("VELOLLM_HOST", raising=False)
    monkeypatch.setattr(client, "DEFAULT_PORT", free_port())
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "store"))
    assert main(["list"]) == 0
    assert capsys.readouterr().out == f"no models in the Ollama store at {tmp_path / 'store'}\n"


def test_list_table_from_tags():
    import datetime as dt

    from velollm.commands.list_models import server_table

    hour_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=61)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    models = [{"name": "llama3.2:latest", "digest": "a80c4f17acd5" + "0" * 52, "size": 2019393189,
               "modified_at": hour_ago, "details": {"family": "llama", "quantization_level": "Q4_K_M"}},
              {"name": "gpt-oss:120b-cloud", "remote_model": "gpt-oss:120b", "digest": "569662207105" + "1" * 52,
               "size": 384, "modified_at": "0001-01-01T00:00:00Z", "capabilities": ["completion", "tools"]}]
    assert server_table(models) == [
        ("NAME", "ID", "SIZE", "MODIFIED", "QUANTIZATION", "FAMILY", "CAPABILITIES"),
        ("llama3.2:latest", "a80c4f17acd5", "2.0 GB", "About an hour ago", "Q4_K_M", "llama", ""),
        ("gpt-oss:120b-cloud", "569662207105", "-", "Never", "", "", "completion,tools")]  # a cloud model: no size
    assert server_table(models[1:2], "GPT") == [("NAME", "ID", "SIZE", "MODIFIED", "CAPABILITIES"),
                                                 ("gpt-oss:120b-cloud", "569662207105", "-", "Never", "completion,tools")]
    assert server_table(models, "x") == [("NAME", "ID", "SIZE", "MODIFIED")]


def test_show_verbose_text_is_ollamas():
    """`ollama show -v` (cmd.go showInfo): Metadata (keys sorted, values as Go prints the decoded JSON: %g numbers,
    a list cut to what fits in 10 columns) and Tensors (name, type, shape as %v), after Parameters, before
    License."""
    from velollm.commands.show import describe

    show = {"details": {"family": "llama", "parameter_size": "197K", "quantization_level": "Q8_0"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192, "general.parameter_count":
                           8030261248, "llama.rope.freq_base": 500000.0, "llama.attention.layer_norm_rms_epsilon":
                           1e-05, "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a"], "tokenizer.ggml.add_bos_token":
                           True, "tokenizer.ggml.token_type": [1, 3, 3], "llama.rope.dimension_sections": None},
            "tensors": [{"name": "token_embd.weight", "type": "Q8_0", "shape": [64, 960]},
                        {"name": "output_norm.weight", "type": "F32", "shape": [64]}],
            "capabilities": ["completion"], "license": "MIT"}
    assert describe(show, verbose=True) == (
        "  Model\n    architecture      llama\n    parameters        197K\n    context length    8192\n"
        "    quantization      Q8_0\n\n"
        "  Capabilities\n    completion\n\n"
        "  Metadata\n"
        "    general.architecture                      llama\n"
        "    general.parameter_count                   8.030261248e+09\n"
        "    llama.attention.layer_norm_rms_epsilon    1e-05\n"
        "    llama.context_length                      8192\n"
        "    llama.rope.dimension_sections             <nil>\n"
        "    llama.rope.freq_base                      500000\n"
        "    tokenizer.ggml.add_bos_token              true\n"
        "    tokenizer.ggml.token_type                 [1 3 3]\n"
        "    tokenizer.ggml.tokens                     [<unk> ...+3 more]\n\n"
        "  Tensors\n"
        "    token_embd.weight     Q8_0    [64 960]\n"
        "    output_norm.weight    F32     [64]\n\n"
        "  License\n    MIT\n\n")
    assert "Metadata" not in describe(show) and "Tensors" not in describe(show)
