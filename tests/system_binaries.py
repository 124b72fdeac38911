"""Outside programs the tests start (redis-server, chromium): `.ci/system-deps` installs them."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """The binary's path; skips the test where it is missing, except in CI, where that is a failure."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed: add its package to .ci/apt-packages.txt")
    pytest.skip(f"{name} is not installed (`bash .ci/system-deps` installs it)")
