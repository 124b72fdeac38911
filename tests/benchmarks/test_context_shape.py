"""benchmarks/context.py's --shape / --layers: the arguments parse, the refused combinations say why, and the
server is started on the shape's folder with the right name, KV cache and device; no model is written or run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def context():
    spec = importlib.util.spec_from_file_location("benchmark_context", ROOT / "benchmarks" / "context.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shape_with_layers(context, tmp_path: Path):
    args = context.parse_args(["--shape", "llama-3.2-1b", "--layers", "2", "--device", "cpu", "--workdir",
                               str(tmp_path), "--repeats", "2"])
    assert args.parts == "ttft,floor"  # the default parts with --shape
    assert args.folder == tmp_path / "llama-3.2-1b-float32-2layers"
    assert context.served_model(args) == "llama-3.2-1b"
    # 2 layers x (k, v) x 8 KV heads x 64 x 4 bytes x 8192 tokens x 4 contexts = 256 MiB: the 512 MiB floor
    assert context.serve_args(args) == ["--model", str(tmp_path / "llama-3.2-1b-float32-2layers"),
                                        "--served-model-name", "llama-3.2-1b", "--kv-cache-memory", "512MiB",
                                        "--device", "cpu"]
    assert context.model_fields(args) == {"model": "llama-3.2-1b", "layers": 2, "dtype": "float32"}
    assert "2 of its 16 layers" in context.model_label(args)


def test_full_shape_shares_the_other_benchmarks_folder(context, tmp_path: Path):
    for extra in ([], ["--layers", "32"]):
        args = context.parse_args(["--shape", "llama-3.1-8b", "--device", "cpu", "--workdir", str(tmp_path),
                                   "--parts", "ttft", *extra])
        assert args.folder == tmp_path / "llama-3.1-8b-float32"  # as serving_velollm.py / throughput.py name it
        assert args.parts == "ttft"
        # 32 layers x 2 x 8 x 128 x 4 bytes x 8192 x 4 = 8 GiB (512 MiB would not hold one context)
        assert context.serve_args(args)[4:6] == ["--kv-cache-memory", "8192MiB"]


def test_demo_unchanged(context):
    args = context.parse_args([])
    assert args.parts == "ttft,floor,compress,switch" and args.shape is None and args.folder is None
    assert context.served_model(args) == "demo"
    assert context.serve_args(args) == ["--kv-cache-memory", "512MiB", "--device", "auto"]


def test_start_builds_the_server_command(context, tmp_path: Path, monkeypatch):
    args = context.parse_args(["--shape", "smollm2-135m", "--layers", "3", "--device", "cpu", "--workdir",
                               str(tmp_path)])
    seen = {}

    def fake_start_serve(tmp, *argv, env=None, timeout=None):
        seen["argv"] = list(argv)
        return None, "http://127.0.0.1:1", tmp / "log", 0.0

    monkeypatch.setattr(context, "start_serve", fake_start_serve)
    context.start(args, "--max-model-len", "8192", "--context-overflow", "compress", "--no-prefetch")
    assert seen["argv"] == ["--model", str(tmp_path / "smollm2-135m-float32-3layers"), "--served-model-name",
                            "smollm2-135m", "--kv-cache-memory", "512MiB", "--device", "cpu", "--max-model-len",
                            "8192", "--context-overflow", "compress", "--no-prefetch"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--shape", "llama-3.2-1b", "--parts", "ttft,compress"], "--shape runs the ttft and floor parts only"),
    (["--shape", "llama-3.2-1b", "--parts", "switch"], "the switch part(s) use the demo model"),
    (["--shape", "llama-3.2-1b", "--compressor", "bert-base-random"], "lingua"),
    (["--layers", "2"], "--layers needs --shape"),
    (["--shape", "llama-3.2-1b", "--layers", "0"], "llama-3.2-1b has 16 layers"),
    (["--shape", "llama-3.2-1b", "--layers", "17"], "llama-3.2-1b has 16 layers"),
    (["--shape", "gpt-5"], "invalid choice"),
])
def test_refused(context, capsys, argv: list[str], message: str):
    with pytest.raises(SystemExit) as exc:
        context.parse_args(["--device", "cpu", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
