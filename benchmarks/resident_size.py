"""What the weights of a GGUF model take once loaded, by quantization and dtype (no file is written).

For each model shape (benchmarks/gguf_files.py) the tensor table of a file of `--ftype`, with the type
llama.cpp's quantizer gives each tensor, is put through the loader's own rule
(velollm/engine/loader/gguf_quantized.resident_weight_bytes, which the memory check uses): the file's tensor
bytes, then the resident bytes dequantized (`none`) and with the CPU int4 path (`int4`), in float32 and bfloat16.

Usage: python benchmarks/resident_size.py [--ftype Q4_K_M] [--shapes llama-3.2-3b llama-3.1-8b]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from gguf_files import SHAPES, llama_cpp_type, tensor_shapes


def main() -> None:
    import gguf

    from velollm.engine.loader.gguf_file import TensorInfo
    from velollm.engine.loader.gguf_quantized import resident_weight_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ftype", default="Q4_K_M", choices=["Q4_K_M", "Q4_0", "Q8_0"])
    parser.add_argument("--shapes", nargs="+", default=sorted(SHAPES), choices=sorted(SHAPES))
    args = parser.parse_args()
    for name in args.shapes:
        shape = SHAPES[name]
        infos = []
        for tensor, dims in tensor_shapes(shape).items():
            elements = int(np.prod(dims))
            if len(dims) == 1:
                infos.append(TensorInfo(tensor, tuple(dims), int(gguf.GGMLQuantizationType.F32), 0, elements * 4))
                continue
            qtype = gguf.GGMLQuantizationType[llama_cpp_type(tensor, args.ftype, shape["layers"])]
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            infos.append(TensorInfo(tensor, tuple(dims), int(qtype), 0, elements // block * type_size))
        gb = {f"{quantization}_{dtype}_gb": round(resident_weight_bytes(infos, quantization, size) / 1e9, 2)
              for quantization in ("none", "int4") for dtype, size in (("float32", 4), ("bfloat16", 2))}
        emit(what="resident_size", shape=name, ftype=args.ftype,
             file_tensors_gb=round(sum(i.nbytes for i in infos) / 1e9, 2), **gb)


if __name__ == "__main__":
    main()
