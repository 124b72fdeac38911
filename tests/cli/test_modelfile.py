"""velollm.commands.modelfile against Ollama's own parser cases (parser/parser_test.go's inputs and the
commands Ollama reads from them), and velollm.commands.create's request against parser.CreateRequest."""

from __future__ import annotations

import pytest

from velollm.commands.create import request
from velollm.commands.modelfile import INVALID_COMMAND, INVALID_ROLE, Command, ModelfileError, decode, parse

LLAMA3 = ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>")


def test_every_command():
    text = (f'\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n'
            f'TEMPLATE """{LLAMA3}"""    \nRENDERER r1\nPARSER p1\nDRAFT ./assistant\n')
    assert parse(text) == [Command("model", "model1"), Command("adapter", "adapter1"), Command("license", "MIT"),
                           Command("param1", "value1"), Command("param2", "value2"), Command("template", LLAMA3),
                           Command("renderer", "r1"), Command("parser", "p1"), Command("draft", "./assistant")]


def test_spaces_are_trimmed_outside_quotes_and_kept_inside():
    text = ('\nFROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\nPARAMETER param1        value1\n'
            'TEMPLATE """   {{ .Prompt }}   """    \n')
    assert parse(text) == [Command("model", "     model 1"), Command("adapter", "adapter3"),
                           Command("license", "MIT       "), Command("param1", "value1"),
                           Command("template", "   {{ .Prompt }}   ")]


@pytest.mark.parametrize("text, expected", [
    ('FROM "FOO  BAR  "', [Command("model", "FOO  BAR  ")]),
    ('FROM "FOO BAR"\nPARAMETER param1 value1', [Command("model", "FOO BAR"), Command("param1", "value1")]),
    ("FROM     FOOO BAR    ", [Command("model", "FOOO BAR")]),
    ("FROM /what/is/the path ", [Command("model", "/what/is/the path")]),
    ("FROM llama3:7b-instruct-q4_K_M", [Command("model", "llama3:7b-instruct-q4_K_M")]),
    ("from foo", [Command("model", "foo")]),  # commands in any case
    ("PARAMETER param1 value1\nFROM foo", [Command("param1", "value1"), Command("model", "foo")]),
    ("PARAMETER what the \nFROM lemons make lemonade ",
     [Command("what", "the"), Command("model", "lemons make lemonade")]),
    ("\n# comment\nFROM foo\n\t", [Command("model", "foo")]),
    ("FROM foo # not a comment", [Command("model", "foo # not a comment")]),
])
def test_from(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["", "PARAMETER param1 value1", "# FROM foo"])
def test_no_from_line(text):
    with pytest.raises(ModelfileError, match="^no FROM line$"):
        parse(text)


@pytest.mark.parametrize("text, expected", [
    ('SYSTEM """\nThis is a\nmultiline system.\n"""\n\t\t\t', "\nThis is a\nmultiline system.\n"),
    ('SYSTEM """\nThis is a\nmultiline system."""\n', "\nThis is a\nmultiline system."),
    ('SYSTEM """This is a\nmultiline system."""', "This is a\nmultiline system."),
    ('SYSTEM """\nThis is a multiline system with "quotes".\n"""\n', '\nThis is a multiline system with "quotes".\n'),
    ('SYSTEM """"""\n', ""),
    ('SYSTEM ""\n', ""),
    ("SYSTEM \"'\"\n", "'"),
    ('SYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n', '\'\'"\'""\'""\'"\'\'\'\'\'""\'""\''),
    ('TEMPLATE """\n{{ .Prompt }}\n"""', "\n{{ .Prompt }}\n"),
])
def test_quoted(text, expected):
    commands = parse(f"FROM foo\n{text}")
    assert commands[1].args == expected


@pytest.mark.parametrize("text", ['SYSTEM """This is a multiline system.""\n\t\t\t', 'SYSTEM "\n\t\t\t',
                                  "PARAMETER param1\n", "MESSAGE system\n", "MESSAGE system"])
def test_unexpected_end(text):
    with pytest.raises(ModelfileError, match="^unexpected EOF"):
        parse(f"FROM foo\n{text}")


def test_messages():
    text = ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\n"
            'MESSAGE assistant """\nHello, I want to parse all the things!\n"""')
    assert parse(text)[1:] == [Command("message", "system: You are a file parser. Always parse things."),
                               Command("message", "user: Hey there!"),
                               Command("message", "assistant: \nHello, I want to parse all the things!\n")]


def test_errors_name_the_line():
    with pytest.raises(ModelfileError) as bad_command:
        parse("\nFROM foo\nBADCOMMAND param1 value1\n")
    assert str(bad_command.value) == f"(line 3): {INVALID_COMMAND}"
    with pytest.raises(ModelfileError) as bad_role:
        parse("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n")
    assert str(bad_role.value) == f"(line 3): {INVALID_ROLE}"


@pytest.mark.parametrize("value, name, expected", [
    ("### User:", "stop", "### User:"), ("### User: ", "stop", "### User:"), ('"### User: "', "stop", "### User: "),
    ('"""### User:\n"""', "stop", "### User:\n"), ("<|eot_id|>", "stop", "<|eot_id|>"), ("1.0", "top_p", "1.0"),
])
def test_parameters(value, name, expected):
    assert parse(f"FROM foo\nPARAMETER {name} {value}\n")[1] == Command(name, expected)


@pytest.mark.parametrize("bom, codec", [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                                        (b"\xef\xbb\xbf", "utf-8")])
def test_byte_order_marks(bom, codec):
    raw = bom + "FROM bob\nPARAMETER param1 1\nSYSTEM You are a utf16 file.\n".encode(codec)
    assert parse(decode(raw)) == [Command("model", "bob"), Command("param1", "1"),
                                  Command("system", "You are a utf16 file.")]


def test_request_types_parameters_and_collects_stops(tmp_path):
    text = ("FROM llama3.2\nPARAMETER temperature 0.2\nPARAMETER num_ctx 4096\nPARAMETER stop <|eot_id|>\n"
            'PARAMETER stop "### User:"\nPARAMETER use_mmap false\nPARAMETER mirostat 1\nSYSTEM be brief\n'
            "LICENSE MIT\nLICENSE Apache\nMESSAGE user hi\nMESSAGE assistant hello: there\nREQUIRES v0.14.0\n")
    body, uploads = request(parse(text), tmp_path)  # mirostat: deprecated, warned and dropped
    assert uploads == {}
    assert body == {"from": "llama3.2", "system": "be brief", "license": ["MIT", "Apache"], "requires": "0.14.0",
                    "parameters": {"temperature": 0.2, "num_ctx": 4096, "stop": ["<|eot_id|>", "### User:"],
                                   "use_mmap": False},
                    "messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello: there"}]}


@pytest.mark.parametrize("line, message", [
    ("PARAMETER temprature 0.2", "unknown parameter 'temprature'"),
    ("PARAMETER num_ctx lots", "invalid int value [lots]"),
    ("PARAMETER top_p high", "invalid float value [high]"),
    ("PARAMETER temperature NaN", "json: unsupported value: NaN"),  # Go parses it; its JSON encoder refuses it
    ("REQUIRES soon", "requires must be a valid semver"),
    ("ADAPTER ./missing.gguf", "ADAPTER ./missing.gguf: no such file or directory"),
])
def test_request_refuses(tmp_path, line, message):
    with pytest.raises(ModelfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        request(parse(f"FROM foo\n{line}\n"), tmp_path)


def test_request_paths(tmp_path, monkeypatch):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    folder = tmp_path / "hf"
    (folder / "1_Pooling").mkdir(parents=True)
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json",
                 "tokenizer.json", "1_Pooling/config.json", "README.md"):
        (folder / name).write_text("x")
    body, uploads = request(parse("FROM ./weights.gguf\n"), tmp_path)
    assert body == {} and uploads == {"files": {"weights.gguf": tmp_path / "weights.gguf"}}
    body, uploads = request(parse("FROM hf\n"), tmp_path)  # a folder next to the Modelfile
    assert sorted(uploads["files"]) == ["1_Pooling/config.json", "config.json", "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors", "tokenizer.json"]
    monkeypatch.setenv("HOME", str(tmp_path))
    _, uploads = request(parse("FROM ~/weights.gguf\n"), tmp_path / "elsewhere")
    assert uploads == {"files": {"weights.gguf": tmp_path / "weights.gguf"}}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelfileError, match="no Modelfile or safetensors files found"):
        request(parse("FROM empty\n"), tmp_path)
