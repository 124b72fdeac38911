"""Usage errors as Ollama's CLI (cobra) gives them: `Error: <message>` on stderr, exit status 1, no usage dump;
`--help` still exits 0."""

from __future__ import annotations

import pytest

from velollm.cli import main


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    captured = capsys.readouterr()
    assert exc.value.code == 1 and captured.out == "", captured
    return captured.err


def test_unknown_flags_and_commands_as_cobra_words_them(capsys):
    assert _fails(capsys, "ps", "--foo") == "Error: unknown flag: --foo\n"
    assert _fails(capsys, "ps", "--foo=1") == "Error: unknown flag: --foo\n"
    assert _fails(capsys, "list", "-x") == "Error: unknown shorthand flag: 'x' in -x\n"
    assert _fails(capsys, "run", "demo", "hi", "--bogus") == "Error: unknown flag: --bogus\n"
    assert _fails(capsys, "frobnicate") == 'Error: unknown command "frobnicate" for "velollm"\n'
    # cobra's suggestions: at most two edits away, or a prefix; by a command's name, never an alias (ls)
    assert _fails(capsys, "serv") == 'Error: unknown command "serv" for "velollm"\n\nDid you mean this?\n\tserve\n\n'
    assert _fails(capsys, "optim").endswith("Did you mean this?\n\toptimize\n\n")
    assert _fails(capsys, "lst").endswith("Did you mean this?\n\tlist\n\tps\n\n")  # "ls" is list's alias


def test_other_usage_errors_exit_1_with_argparses_message(capsys):
    assert _fails(capsys, "show") == "Error: the following arguments are required: model\n"
    assert _fails(capsys, "show", "a", "b") == "Error: unrecognized arguments: b\n"
    assert _fails(capsys, "run", "-o", "num_predict", "demo") == (
        "Error: argument -o/--option: takes NAME=VALUE, not 'num_predict'\n")
    err = _fails(capsys, "run", "demo", "--think=sure")
    assert err.startswith("Error: invalid think value 'sure'")
    assert _fails(capsys, "serve", "--kv-cache-dtype", "int4").startswith(
        "Error: argument --kv-cache-dtype: invalid choice: 'int4'")


def test_help_still_exits_0(capsys):
    for argv in (["--help"], ["run", "--help"], ["help", "show"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: velollm")
    assert main([]) == 0 and "usage: velollm" in capsys.readouterr().out
