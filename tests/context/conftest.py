from __future__ import annotations

import shutil

import pytest

from velollm.engine.loader.demo import ensure_demo


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[str, str]:
    """Two on-demand models: the demo model and a copy of it under another path (so another name)."""
    tmp = tmp_path_factory.mktemp("two_models")
    first = ensure_demo(tmp / "a")
    second = tmp / "b" / "demo-copy"
    shutil.copytree(first, second)
    return str(first), str(second)
