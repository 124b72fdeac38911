"""raise_open_files_limit (velollm/commands/open_files.py), in child processes: it changes its process's limits."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from tests.serve_process import REPO

PROBE = ("import logging, resource, sys; logging.basicConfig(level='INFO', stream=sys.stdout)\n"
         "from velollm.commands.open_files import raise_open_files_limit\n"
         "print('result', raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n")


def _probe(soft: int, hard: int) -> str:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run([sys.executable, "-c", PROBE], check=False, cwd=REPO, preexec_fn=limit,
                         capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _hard() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_a_low_soft_limit_is_raised_to_the_hard_one():
    hard = _hard()
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard limit {hard}")
    wanted = 65535 if hard == resource.RLIM_INFINITY else min(hard, 65535)
    out = _probe(256, hard)
    assert f"result (256, {wanted}) ({wanted}, {hard})" in out
    assert f"open-files limit raised from 256 to {wanted}" in out
    assert "WARNING" not in out


def test_a_low_hard_limit_is_a_warning_not_an_error():
    out = _probe(256, 512)
    assert "result (256, 512) (512, 512)" in out
    assert "the hard limit on open files is 512" in out


def test_a_soft_limit_already_high_is_left_alone():
    out = _probe(512, 512)
    assert "result (512, 512) (512, 512)" in out
    assert "raised" not in out
