from __future__ import annotations

import argparse

import pytest

from velollm.cache.calibration import threshold_for
from velollm.cache.config import parse_duration
from velollm.cache.options import add_cache_arguments, cache_config


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cache_arguments(parser)
    return parser.parse_args(list(argv))


def test_off_by_default_and_flags_to_config(tmp_path):
    assert cache_config(parse(), {}) is None
    config = cache_config(parse("--semantic-cache", "--cache-ttl", "15m", "--cache-max-entries", "5",
                                "--semantic-max-error", "0.05"), {"VELOLLM_CACHE": str(tmp_path)})
    assert config.semantic and config.ttl_s == 900 and config.max_entries == 5
    assert config.sqlite_path == tmp_path / "cache.sqlite3" and config.semantic_max_error == 0.05
    assert config.embedding_device == "auto" and config.flight_wait_s == 60
    assert cache_config(parse("--cache", "--cache-flight-wait", "15s"), {}).flight_wait_s == 15
    serve_args = parse("--cache")
    serve_args.device = "cpu"  # velollm serve's --device
    assert cache_config(serve_args, {}).embedding_device == "cpu"
    assert cache_config(parse("--cache-url", "redis://127.0.0.1:6379"), {}).url == "redis://127.0.0.1:6379"
    with pytest.raises(ValueError, match="redis://"):
        cache_config(parse("--cache-url", "http://x"), {})
    with pytest.raises(SystemExit):
        parse("--cache-ttl", "soon")


def test_durations_and_the_error_bound():
    assert parse_duration("90") == 90 and parse_duration("1h") == 3600 and parse_duration("2d") == 172800
    assert threshold_for(0.01) > threshold_for(0.02) > threshold_for(0.1)  # a tighter bound: a higher bar
    with pytest.raises(ValueError):
        threshold_for(0)
