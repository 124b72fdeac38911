"""Linear and embedding layers whose weights stay GGUF-quantized (velollm.kernels.gguf_planes).

`quantize_linears` swaps them in on the meta-device model, before anything is allocated, so no dense
copy of a quantized weight ever exists. Each layer holds its weight as output-row shards (q/k/v and
gate/up arrive as separate GGUF tensors): a QuantizedWeight, or a dense tensor where the file stores
the tensor as float. Once loaded, neighbouring shards of one type are stacked, so a fused projection
of one type is one kernel launch; a Q4_K_M file's Q6_K v_proj is its own launch into its columns.
On the CPU (quantization "int4") the 4-bit shards come as Int4Weight (velollm.kernels.int4_cpu) and the
others as dense tensors dequantized at load; Int4Weight shards of any 4-bit type stack the same way.
The layers of one model share one Int4Scratch: at prefill sizes an Int4Weight is dequantized into it per
call (int4_cpu.prefill_rows), so it grows to the model's largest int4 matrix in the model's dtype, once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from velollm import kernels
from velollm.errors import ModelLoadError
from velollm.hw import cpu_features
from velollm.hw.torch_threads import one_intra_op_thread
from velollm.kernels import int4_cpu
from velollm.kernels.gguf_planes import QuantizedWeight, cat_rows
from velollm.kernels.int4_cpu import Int4Weight
from velollm.kernels.int4_unpack import Int4Scratch

Weight = QuantizedWeight | Int4Weight | torch.Tensor


def _matmul(x: torch.Tensor, w: Weight, out: torch.Tensor | None = None,
            scratch: Int4Scratch | None = None) -> torch.Tensor:
    if isinstance(w, QuantizedWeight):
        return kernels.quantized_linear(x, w, out=out)
    if isinstance(w, Int4Weight):
        y = int4_cpu.int4_linear(x, w, scratch)
        return y if out is None else out.copy_(y)
    return F.linear(x, w) if out is None else out.copy_(F.linear(x, w))


def _weight_bytes(w: Weight | None) -> int:
    if w is None:
        return 0
    return w.nbytes if isinstance(w, (QuantizedWeight, Int4Weight)) else w.numel() * w.element_size()


class QuantizedEmbedding(nn.Module):
    """Token embedding whose rows are dequantized on lookup (a dense weight when the file has floats)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.shape = (num_embeddings, embedding_dim)
        self.dtype = dtype
        self.weight: Weight | None = None

    def load_shard(self, index: int, weight: Weight) -> None:
        _check_shape(weight, self.shape, "embedding")
        self.weight = weight

    def finish(self) -> None:
        if self.weight is None:
            raise ModelLoadError("checkpoint lacks the token embedding")

    def weight_bytes(self) -> int:
        return _weight_bytes(self.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.weight, QuantizedWeight):
            return kernels.quantized_embedding(input_ids, self.weight, self.dtype)
        return F.embedding(input_ids, self.weight)


class QuantizedLinear(nn.Module):
    """y = x @ W^T (+ bias), W held as GGUF planes (kernels.quantized_linear) in output-row shards."""

    def __init__(self, in_features: int, shard_sizes: list[int], bias: bool,
                 scratch: Int4Scratch | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.scratch = scratch  # shared by the model's layers: dequantized int4 weights at prefill
        self.out_features = sum(shard_sizes)
        self.shard_sizes = list(shard_sizes)
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.shards: list[Weight | None] = [None] * len(shard_sizes)
        self.parts: list[tuple[int, Weight]] = []  # (first output column, weight), set by finish()
        self._tied: list[QuantizedEmbedding] = []  # a list, so the embedding is not a registered child

    def tie_to(self, embedding: QuantizedEmbedding) -> None:
        """Use the embedding's weight (tied lm_head); read when loading finishes."""
        self._tied = [embedding]

    def load_shard(self, index: int, weight: Weight) -> None:
        _check_shape(weight, (self.shard_sizes[index], self.in_features), f"shard {index}")
        self.shards[index] = weight

    def finish(self) -> None:
        """Stack neighbouring shards of one quantized type; dense shards are joined the same way."""
        if self._tied:
            self.shards = [self._tied[0].weight]
        if any(s is None for s in self.shards):
            raise ModelLoadError(f"checkpoint lacks {self.shards.count(None)} shard(s) of a fused projection")
        groups: list[list[Weight]] = []
        for w in self.shards:
            if groups and _same_kind(groups[-1][-1], w):
                groups[-1].append(w)
            else:
                groups.append([w])
        offset, self.parts = 0, []
        for group in groups:
            w = group[0] if len(group) == 1 else _stack(group)
            self.parts.append((offset, w))
            offset += w.shape[0]
        self.shards = []

    def weight_bytes(self) -> int:
        return 0 if self._tied else sum(_weight_bytes(w) for _, w in self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.parts) == 1:
            y = _matmul(x, self.parts[0][1], scratch=self.scratch)
        else:
            y = x.new_empty(*x.shape[:-1], self.out_features)
            flat_x, flat_y = x.reshape(-1, self.in_features), y.view(-1, self.out_features)
            for offset, w in self.parts:
                _matmul(flat_x, w, out=flat_y[:, offset:offset + w.shape[0]], scratch=self.scratch)
        return y if self.bias is None else y + self.bias


def _same_kind(a: Weight, b: Weight) -> bool:
    """Whether b may be stacked below a in one matrix."""
    if isinstance(a, QuantizedWeight) and isinstance(b, QuantizedWeight):
        return a.qtype == b.qtype
    if isinstance(a, Int4Weight) and isinstance(b, Int4Weight):
        return int4_cpu.can_stack(a)
    dense = (QuantizedWeight, Int4Weight)
    return not isinstance(a, dense) and not isinstance(b, dense)


def _stack(group: list[Weight]) -> Weight:
    if isinstance(group[0], QuantizedWeight):
        return cat_rows(group)  # type: ignore[arg-type]
    if isinstance(group[0], Int4Weight):
        return int4_cpu.cat_rows(group)  # type: ignore[arg-type]
    return torch.cat(group)  # type: ignore[arg-type]


def _check_shape(weight: Weight, shape: tuple[int, int], what: str) -> None:
    if tuple(weight.shape) != tuple(shape):
        raise ModelLoadError(f"{what} has shape {tuple(weight.shape)}, expected {tuple(shape)}")


QUANTIZED_MODULES = (QuantizedLinear, QuantizedEmbedding)


def _prefill_scratch(dtype: torch.dtype) -> Int4Scratch | None:
    """The buffer for int4 prefills through the dequantized weights (int4_unpack), in the model's dtype: float32
    (its GEMM runs in hardware everywhere), or bfloat16 where that GEMM runs in hardware (AVX512-BF16, AMX-BF16).
    Elsewhere a bfloat16 GEMM is emulated and slower than the int4 kernel at every size (benchmarks/int4_prefill.py
    on an AVX2 EPYC, 4096x4096 at 256 rows: the kernel 260 ms, F.linear in bfloat16 857 ms, the GEMM on the
    transposed buffer 44 s; benchmarks/data/int4_prefill_avx2.jsonl), so the kernel runs every size (None). Such a
    CPU runs GGUF files in float32 unless told otherwise."""
    if dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_features.has_native_bf16()):
        return Int4Scratch(one_intra_op_thread(), dtype)  # dequantizes on a thread of one torch thread (int4_unpack)
    return None


def quantize_linears(model: nn.Module, dtype: torch.dtype, fused: dict[str, str]) -> None:
    """Replace every nn.Linear and nn.Embedding of `model` (on the meta device) by its quantized
    counterpart. `fused`: child name -> the parent's method giving the shard sizes (q/k/v, gate/up)."""
    scratch = _prefill_scratch(dtype)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                sizes = getattr(parent, fused[name])() if name in fused else [child.out_features]
                setattr(parent, name, QuantizedLinear(child.in_features, sizes, child.bias is not None, scratch))
            elif isinstance(child, nn.Embedding):
                setattr(parent, name, QuantizedEmbedding(child.num_embeddings, child.embedding_dim, dtype))


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take where they live: parameters, buffers and quantized planes."""
    dense = {id(t): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
    return sum(dense.values()) + sum(m.weight_bytes() for m in model.modules() if isinstance(m, QUANTIZED_MODULES))
