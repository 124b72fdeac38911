"""Which process runs a background response, so that a store shared by several servers (one cache directory, the
default) fails only the rows of a process that is gone: the pid and its start time (a pid reused by another
process is not taken for the one that stopped)."""

from __future__ import annotations

import functools
import os


def _start_time(pid: int) -> str:
    import psutil  # not at import: the proxy-only start stays fast

    return f"{psutil.Process(pid).create_time():.2f}"


@functools.cache
def this_process() -> str:
    """This process as a runner id: "pid@start time"."""
    return f"{os.getpid()}@{_start_time(os.getpid())}"


def is_running(runner: str | None) -> bool:
    """Whether the process `runner` names is still there (an unreadable one is taken as there)."""
    import psutil

    pid, _, started = (runner or "").partition("@")
    if not pid.isdigit():
        return False
    try:
        return _start_time(int(pid)) == started
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
