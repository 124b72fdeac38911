"""Print the summary table of a gpu_check run from its JSON-lines results (one object per line, key "what").

Rows whose "what" ends in "_cfg" (tuning sweeps) stay in the logs, not in the table.
Usage: python benchmarks/report_table.py RESULTS.jsonl
"""

from __future__ import annotations

import json
import sys

SKIP_KEYS = {"what"}


def fmt(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={v}" for k, v in value.items()) + "}"
    return str(value)


def main(path: str) -> int:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "what" in row and not str(row["what"]).endswith("_cfg"):
                rows.append(row)
    width = max([len(str(r["what"])) for r in rows] + [4])
    print("=" * 100)
    print(f"{'what':<{width}} | result")
    print("-" * 100)
    for r in rows:
        print(f"{r['what']:<{width}} | " + "  ".join(f"{k}={fmt(v)}" for k, v in r.items() if k not in SKIP_KEYS))
    print("=" * 100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
