"""Session-scoped tiny GGUF fixtures, built on first use in a temporary folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .tiny_gguf import ArchSpec, TokMeta, bpe_tokenizer, spm_tokenizer, state_dict, write_gguf

ARCH_SPECS = {
    "llama": ArchSpec("llama", llama3_rope=True),
    "qwen2": ArchSpec("qwen2", tied=True, rope_theta=1e6, eps=1e-6),
    "qwen3": ArchSpec("qwen3", head_dim=128, rope_theta=1e6, eps=1e-6),
}
# A vocab-only sized model: llama.cpp's vocab_only load still reads the hyperparameters.
TOKENIZER_SPEC = ArchSpec("llama", hidden=64, layers=1, heads=2, kv_heads=1, intermediate=128, head_dim=32)


@dataclass(frozen=True)
class Fixture:
    path: Path
    spec: ArchSpec
    sd: dict[str, torch.Tensor]
    tok: TokMeta
    qtype: str


class FixtureFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._toks: dict[str, TokMeta] = {}
        self._built: dict[tuple[str, str, str], Fixture] = {}

    def tokenizer(self, kind: str) -> TokMeta:
        if kind not in self._toks:
            self._toks[kind] = spm_tokenizer() if kind == "spm" else bpe_tokenizer(kind)
        return self._toks[kind]

    def model(self, arch: str, qtype: str = "F32", tok: str | None = None) -> Fixture:
        tok = tok or {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2"}[arch]
        key = (arch, qtype, tok)
        if key not in self._built:
            spec = ARCH_SPECS[arch]
            meta = self.tokenizer(tok)
            sd = state_dict(spec, len(meta.tokens), seed={"llama": 1, "qwen2": 2, "qwen3": 3}[arch])
            path = write_gguf(self.root / f"{arch}-{tok}-{qtype}.gguf", spec, sd, meta, qtype)
            self._built[key] = Fixture(path, spec, sd, meta, qtype)
        return self._built[key]

    def vocab_model(self, tok: str) -> Path:
        path = self.root / f"vocab-{tok}.gguf"
        if not path.exists():
            meta = self.tokenizer(tok)
            write_gguf(path, TOKENIZER_SPEC, state_dict(TOKENIZER_SPEC, len(meta.tokens)), meta, "F32")
        return path

    def kquant(self, arch: str, ftype: str) -> Path:
        """A K-quant file made from the F32 fixture by llama.cpp's own quantizer."""
        llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
        out = self.root / f"{arch}-{ftype}.gguf"
        if not out.exists():
            src = self.model(arch, "F32").path
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
            assert rc == 0, f"llama_model_quantize({ftype}) failed with {rc}"
        return out


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> FixtureFactory:
    return FixtureFactory(tmp_path_factory.mktemp("gguf"))
