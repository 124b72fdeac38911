"""benchmarks/gpu_check.sh's commands, checked where no GPU is: a GPU session has 15 minutes in all, so a step
that dies on a renamed flag or a moved test file costs a rerun it has no time for. Each step's benchmark
script is imported and its argument parser run on the step's exact arguments (the script stops right after
parsing); each pytest step's files are collected."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
# The shell values the steps use, as gpu_check.sh sets them by default (XDIST: pytest-xdist may be absent).
EXPANSIONS = {'"$WORK"': "/tmp/velollm-bench", '"${PEERS[@]}"': "--skip-peers", '"$RATE_RUN"': "8:300",
              '"${XDIST[@]}"': ""}
# Runs the script as `python script args...` would, stopping once argparse has accepted the arguments.
PARSE_ONLY = """
import argparse, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_then_stop(self, args=None, namespace=None):
    parse(self, args, namespace)
    print("ARGUMENTS ACCEPTED")
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_then_stop
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
runpy.run_path(script, run_name="__main__")
"""


def steps() -> list[tuple[str, list[str]]]:
    """(name, argv after `$PY`) of every `step NAME LIMIT $PY ...` line, continuations joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        match = re.match(r"\s*step (\S+) (\d+) \$PY (.*)$", line)
        if match is None:
            continue
        name, command = match.group(1), match.group(3)
        for shell, value in EXPANSIONS.items():
            command = command.replace(shell, value)
        assert "$" not in command, f"step {name}: unexpanded shell value in {command!r}"
        out.append((name, shlex.split(command)))
    return out


STEPS = steps()
SCRIPT_STEPS = [(n, argv) for n, argv in STEPS if argv[0] != "-m"]
PYTEST_STEPS = [(n, argv) for n, argv in STEPS if argv[:2] == ["-m", "pytest"]]


def test_every_step_is_checked():
    assert len(STEPS) >= 20
    assert {n for n, _ in SCRIPT_STEPS} | {n for n, _ in PYTEST_STEPS} == {n for n, _ in STEPS}


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize(("name", "argv"), SCRIPT_STEPS, ids=[n for n, _ in SCRIPT_STEPS])
def test_step_arguments_parse(name: str, argv: list[str]):
    script = ROOT / argv[0]
    assert script.is_file(), f"step {name}: {argv[0]} does not exist"
    proc = subprocess.run([sys.executable, "-c", PARSE_ONLY, str(script), *argv[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ARGUMENTS ACCEPTED" in proc.stdout, (
        f"step {name}: {shlex.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize(("name", "argv"), PYTEST_STEPS, ids=[n for n, _ in PYTEST_STEPS])
def test_pytest_step_collects(name: str, argv: list[str]):
    paths = [a for a in argv[2:] if a.startswith("tests/")]
    assert paths, f"step {name} names no tests"
    for path in paths:
        assert (ROOT / path).exists(), f"step {name}: {path} does not exist"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"step {name}: collection failed\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
