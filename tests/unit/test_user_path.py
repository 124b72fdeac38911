"""velollm.engine.loader.user_path: `~` expanded where it can be, never an exception."""

from pathlib import Path

from velollm.engine.loader.user_path import user_path


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/models/x.gguf") == tmp_path / "models" / "x.gguf"


def test_unknown_user_stays_as_written():
    assert user_path("~0") == Path("~0")
    assert user_path("~no-such-user-here/m") == Path("~no-such-user-here/m")


def test_plain_names_are_untouched():
    assert user_path("llama3.2:3b") == Path("llama3.2:3b")
