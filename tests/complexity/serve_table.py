"""The routing table the `velollm serve --config` tests start from: the virtual model "smart" sends code
to "big" and the rest to "small", both the demo model."""

from __future__ import annotations

from pathlib import Path

ROUTING = """
[routing]
name = "smart"
default = "small"

[[routing.rules]]
name = "code"
model = "big"
code = true
"""
CODE = "```python\nimport os\nprint(os.getcwd())\n```\nWhat does it print?"


def small_and_big(config: Path) -> tuple[str, ...]:
    """`velollm serve` arguments: the demo model served as "small" and as "big", the routing from `config`."""
    return ("--model", "demo", "--model", "demo", "--served-model-name", "small", "--served-model-name", "big",
            "--config", str(config))
