"""The replayed workload of benchmarks/cache.py (filled in below)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def replay(args: argparse.Namespace) -> None:
    raise SystemExit("replay: not yet")
