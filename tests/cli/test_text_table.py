"""The CLI tables as Ollama's tablewriter (v0.0.5) prints them: cells wider than the column width (30; 100 for
`ollama show`'s System and License) wrap at their spaces with minimal raggedness, a word is never broken (a long
model name stays whole), and a wrapped row's other cells go on as blank lines. Expected texts are what cmd.go would
print, each line without tablewriter's trailing spaces."""

from __future__ import annotations

import random

from velollm.commands.cell_wrap import wrap_string
from velollm.commands.show import describe
from velollm.commands.text_table import text_table


def _go_wrap_words(words: list[str], limit: int) -> list[str]:
    """wrap.go's WrapWords, line by line as Go has it (the n² length table, every break tried)."""
    n = len(words)
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = len(words[i])
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + 1 + len(words[j])
    nbrk, cost = [0] * n, [2**31 - 1] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= limit:
            cost[i], nbrk[i] = 0, n
            continue
        for j in range(i + 1, n):
            d = limit - length[i][j - 1]
            c = d * d + cost[j] + (100_000 if length[i][j - 1] > limit else 0)
            if c < cost[i]:
                cost[i], nbrk[i] = c, j
    lines, i = [], 0
    while i < n:
        lines.append(" ".join(words[i:nbrk[i]]))
        i = nbrk[i]
    return lines


def test_wrap_is_minimal_raggedness_not_greedy():
    # greedy would give "aaa bb" / "cc" / "ddddd"; tablewriter's least squared slack gives this
    assert wrap_string("aaa bb cc ddddd", 6) == ["aaa", "bb cc", "ddddd"]
    # a word wider than the limit raises the limit to its width: never cut, the rest wrapped at that width
    assert wrap_string("registry.ollama.ai/library/llama3.2:latest x", 10) == [
        "registry.ollama.ai/library/llama3.2:latest", "x"]
    assert wrap_string("", 30) == [""]
    rng = random.Random(7)
    for _ in range(300):
        words = ["x" * rng.randint(0, 12) for _ in range(rng.randint(1, 40))]
        limit = rng.randint(1, 40)
        assert wrap_string(" ".join(words), limit) == _go_wrap_words(words, max(limit, *map(len, words)))


def test_long_model_name_is_never_wrapped():
    rows = [("NAME", "ID", "SIZE", "MODIFIED"),
            ("hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M", "a80c4f17acd5", "2.0 GB", "About an hour ago"),
            ("llama3.2:latest", "0123456789ab", "2.0 GB", "3 weeks ago")]
    assert text_table(rows) == [
        "NAME                                                 ID              SIZE      MODIFIED",
        "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M    a80c4f17acd5    2.0 GB    About an hour ago",
        "llama3.2:latest                                      0123456789ab    2.0 GB    3 weeks ago"]


def test_a_wide_cell_wraps_at_30_and_its_row_goes_on_blank():
    # the cell claims the full 30 columns (its widest line is 27): the next column starts after them
    rows = [("NAME", "NOTE", "SIZE"), ("m", "A tiny model for tests that says very little", "1 GB")]
    assert text_table(rows) == [
        "NAME    NOTE                              SIZE",
        "m       A tiny model for tests that       1 GB",
        "        says very little"]
    # lines of one cell are reflowed into one paragraph first, then wrapped at the widest line's width
    # and a blank cell is two spaces even in a column one wide: the row's further lines shift by one
    assert text_table([("a", "one two\nthree")]) == ["a    one two", "      three"]


def test_show_license_and_system_wrap_at_100():
    line = ("Llama 3.2 Community License Agreement Llama 3.2 Version Release Date: September 25, 2024 Agreement "
            "means the terms and conditions for use, reproduction, distribution")
    show = {"details": {"family": "test", "parameter_size": "7B", "quantization_level": "FP16"},
            "license": line, "system": "short"}
    # the License table's empty first column is filled with two spaces on the wrapped line: six in, not four
    assert describe(show) == (
        "  Model\n    architecture    test\n    parameters      7B\n    quantization    FP16\n\n"
        "  System\n    short\n\n"
        "  License\n"
        "    Llama 3.2 Community License Agreement Llama 3.2 Version Release Date: September 25, 2024 Agreement\n"
        "      means the terms and conditions for use, reproduction, distribution\n\n")


def test_show_metadata_values_wrap_at_30():
    show = {"details": {"family": "llama", "parameter_size": "197K", "quantization_level": "Q8_0"},
            "model_info": {"general.architecture": "llama",
                           "general.description": "A tiny model for tests that says very little",
                           "general.organization": "Velo"}}
    assert describe(show, verbose=True).split("  Metadata\n")[1] == (
        "    general.architecture    llama\n"
        "    general.description     A tiny model for tests that\n"
        + " " * 30 + "says very little\n"
        "    general.organization    Velo\n\n")


def test_show_matches_ollamas_own_tests():
    """cmd_test.go TestShowInfo's expectations (trailing spaces trimmed)."""
    details = {"family": "test", "parameter_size": "7B", "quantization_level": "FP16"}
    assert describe({"details": details}) == (
        "  Model\n    architecture    test\n    parameters      7B\n    quantization    FP16\n\n")
    assert describe({"details": details, "license": "MIT License\nCopyright (c) Ollama\n"}) == (
        "  Model\n    architecture    test\n    parameters      7B\n    quantization    FP16\n\n"
        "  License\n    MIT License\n    Copyright (c) Ollama\n\n")
    verbose = {"details": {**details, "parameter_size": "8B"},
               "model_info": {"general.architecture": "test", "general.parameter_count": 8_000_000_000,
                              "some.true_bool": True, "some.false_bool": False, "test.context_length": 1000,
                              "test.embedding_length": 11434},
               "tensors": [{"name": "blk.0.attn_k.weight", "type": "BF16", "shape": [42, 3117]},
                           {"name": "blk.0.attn_q.weight", "type": "FP16", "shape": [3117, 42]}]}
    assert describe(verbose, verbose=True) == (
        "  Model\n    architecture        test\n    parameters          8B\n    context length      1000\n"
        "    embedding length    11434\n    quantization        FP16\n\n"
        "  Metadata\n    general.architecture       test\n    general.parameter_count    8e+09\n"
        "    some.false_bool            false\n    some.true_bool             true\n"
        "    test.context_length        1000\n    test.embedding_length      11434\n\n"
        "  Tensors\n    blk.0.attn_k.weight    BF16    [42 3117]\n    blk.0.attn_q.weight    FP16    [3117 42]\n\n")


def test_show_system_head_and_long_parameter_values():
    """cmd_test.go's "system" case (two lines that are not blank, then "..."), and a parameter value with spaces:
    showInfo splits each Parameters line into words (strings.Fields), one column each, so nothing there wraps."""
    details = {"family": "test", "parameter_size": "7B", "quantization_level": "FP16"}
    model = "  Model\n    architecture    test\n    parameters      7B\n    quantization    FP16\n\n"
    assert describe({"details": details, "system": "You are a pirate!\n\n  Ahoy, matey!\nWeigh anchor!\n\t\t\t"}) == (
        model + "  System\n    You are a pirate!\n    Ahoy, matey!\n    ...\n\n")
    parameters = ('stop                           "<|im_start|>user Hello there, how are you today"\n'
                  "temperature                    0.6")
    assert describe({"details": details, "parameters": parameters}) == model + (
        "  Parameters\n"
        '    stop           "<|im_start|>user    Hello    there,    how    are    you    today"\n'
        "    temperature    0.6\n\n")
