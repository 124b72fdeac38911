"""velollm.router.config: the TOML file, every key validated, reserved tables left to their owners."""

from __future__ import annotations

import pytest

from velollm.router.config import ConfigError, RouterConfig, load_config, parse_config

FULL = """
[router]
policy = "prefix-aware"
retries = 1
health_interval_s = 0.5
health_timeout_s = 0.5
eject_after_failures = 2
readmit_after_s = 3
refresh_interval_s = 10
max_queue = 8
queue_timeout_s = 30
retry_after_s = 4
load_margin = 0.25
prefix_block_bytes = 128
prefix_table_size = 1000

[[backends]]
name = "gpu0"
url = "http://10.0.0.5:8000/v1/"
kind = "velollm"
models = ["llama3.2:3b"]
max_concurrency = 4

[[backends]]
name = "ollama"
url = "http://10.0.0.6:11434"
kind = "ollama"
max_concurrency = 1
api_key = "secret"
connect_timeout_s = 1
first_byte_timeout_s = 300
idle_timeout_s = 60
health_path = "/api/version"

[[backends]]
name = "local"
kind = "native"
models = ["demo"]
served_names = ["tiny"]

[models."llama3.2:3b"]
policy = "round-robin"
load_margin = 1

[routing]
default = "small"
"""


def test_full_file_loads(tmp_path):
    path = tmp_path / "velollm.toml"
    path.write_text(FULL)
    config = load_config(path)
    assert config.router.policy == "prefix-aware" and config.router.retries == 1
    assert config.router.readmit_after_s == 3.0 and isinstance(config.router.readmit_after_s, float)
    gpu0, ollama, local = config.backends
    assert gpu0.url == "http://10.0.0.5:8000" and gpu0.speaks_both and gpu0.upstream_kind == "ollama"
    assert ollama.max_concurrency == 1 and ollama.api_key == "secret" and not ollama.speaks_both
    assert config.native == (local,) and local.served_names == ("tiny",)
    assert [b.name for b in config.remote] == ["gpu0", "ollama"]
    assert config.routing_for("Llama3.2:3B") == ("round-robin", 1)
    assert config.routing_for("other") == ("prefix-aware", 0.25)
    assert config.section("routing") == {"default": "small"}
    with pytest.raises(KeyError):
        config.section("router")


def test_defaults():
    config = parse_config({"backends": [{"url": "http://h:1"}]})
    assert config.router == RouterConfig() and config.router.policy == "least-outstanding"
    assert config.backends[0].name == "backend0" and config.backends[0].kind == "auto"
    assert config.section("routing") == {}


@pytest.mark.parametrize("data, message", [
    ({"routers": {}}, "unknown table(s) routers"),
    ({"router": {"policy": "random"}}, "router.policy must be one of"),
    ({"router": {"retires": 1}}, "router: unknown key(s) retires"),
    ({"router": {"retries": "2"}}, "router.retries must be a number"),
    ({"router": {"retries": 1.5}}, "router.retries must be a whole number"),
    ({"router": {"retries": -1}}, "router.retries must be >= 0"),
    ({"router": {"health_timeout_s": 0}}, "router.health_timeout_s must be > 0"),
    ({"backends": {"url": "http://h"}}, "backends must be an array of tables"),
    ({"backends": [{"name": "a", "url": "h:1"}]}, "backend 'a': url must start with http://"),
    ({"backends": [{"name": "a", "url": "http://h", "kind": "tgi"}]}, "kind must be one of"),
    ({"backends": [{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://i"}]}, "unique: a"),
    ({"backends": [{"name": "a", "kind": "native"}]}, "a native backend needs models"),
    ({"backends": [{"name": "a", "kind": "native", "models": ["demo"], "url": "http://h"}]}, "has no url"),
    ({"backends": [{"name": "a", "url": "http://h", "models": "m", "max_concurrency": -1}]}, "max_concurrency"),
    ({"backends": [{"name": "a", "url": "http://h", "models": [1]}]}, "models must be a list of names"),
    ({"models": {"m": {"policy": "fastest"}}}, "models.*.policy must be one of"),
])
def test_invalid_files_name_the_key(data, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert message in str(exc.value)


def test_unreadable_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[router\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[router]\npolicy = 'x'\n")
    with pytest.raises(ConfigError, match=f"{wrong}: router.policy"):
        load_config(wrong)


def test_local_first_defaults_to_balancing_and_is_overridden_per_model():
    config = parse_config({"backends": [{"name": "local", "kind": "native", "models": ["demo"]}],
                           "models": {"Demo": {"local_first": True}}})
    assert config.router.local_first is False and config.local_first_for("other") is False
    assert config.local_first_for("demo:latest") is True
    everywhere = parse_config({"router": {"local_first": True}, "models": {"demo": {"local_first": False}}})
    assert everywhere.local_first_for("x") is True and everywhere.local_first_for("demo") is False
    for data, key in (({"router": {"local_first": "yes"}}, "router.local_first"),
                      ({"models": {"m": {"local_first": 1}}}, "models.*.local_first")):
        with pytest.raises(ConfigError, match=key):
            parse_config(data)
