"""Session-wide test setup."""

from __future__ import annotations

import os

import torch

# Without a GPU the Triton kernels run under the CPU interpreter. triton.jit reads TRITON_INTERPRET when it
# decorates a kernel, so it must be set before any test imports velollm.kernels. The engine itself never
# runs Triton on CPU tensors, so this only changes the kernel tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
